"""Mixed precision (model.precision=bf16): bf16 autocast, fp32 master weights, fp32 log-probs; GGUF loading errors."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import REWARDS, read_jsonl, small_overrides

from spro.config import ConfigError, load_config
from spro.models.loading import ModelLoadError, load_model
from spro.models.logprobs import sequence_logps
from spro.models.precision import apply_precision, autocast_dtype
from spro.trainer import Trainer


def test_bf16_autocast_keeps_fp32_weights_and_fp32_logits(model_dir):
    model, _ = load_model(str(model_dir))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    want = model(input_ids=ids).logits
    apply_precision(model, "bf16", "cpu")
    inner = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda mod, i, o: inner.append(o.dtype))
    got = model(input_ids=ids).logits
    assert inner == [torch.bfloat16]  # the matmuls run in bf16 ...
    assert got.dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.parameters())  # ... not the rest
    assert 0 < float((got - want).abs().max()) < 0.05
    ref = copy.deepcopy(model)  # the frozen reference / PRIME's PRM keep the precision, bound to themselves
    assert autocast_dtype(ref) == torch.bfloat16 and ref.forward.__self__ is ref
    assert torch.equal(ref(input_ids=ids).logits, got)


def test_bf16_training_on_cpu(model_dir, tmp_path):
    over = small_overrides(model_dir, tmp_path / "run", total_steps=2, **{"model.precision": "bf16",
                                                                          "algorithm.kl_coef": 0.01})
    t = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
    assert autocast_dtype(t.model) == torch.bfloat16 and autocast_dtype(t.ref) == torch.bfloat16
    _, batch = t.rollout()
    logp, _ = sequence_logps(t.model, batch, group_size=t.G)
    assert logp.dtype == torch.float32
    t.train()
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(metrics) == 2 and all(m["loss"] is not None and m["kl"] is not None for m in metrics)
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in t.optimizer.state.values())


def test_bf16_with_lora(model_dir, tmp_path):
    over = small_overrides(model_dir, tmp_path / "run", total_steps=1,
                           **{"model.precision": "bf16", "model.lora.rank": 2})
    t = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
    assert autocast_dtype(t.model.get_base_model()) == torch.bfloat16
    t.train()
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]["kl"] is not None


def test_precision_needs_fp32_weights_and_a_known_name(model_dir):
    with pytest.raises(ConfigError, match="model.dtype must be float32"):
        load_config(overrides=["model.precision=bf16", "model.dtype=bfloat16"])
    with pytest.raises(ConfigError, match="model.precision: 'fp16' is not one of fp32, bf16"):
        load_config(overrides=["model.precision=fp16"])
    model, _ = load_model(str(model_dir), dtype="bfloat16")
    with pytest.raises(ValueError, match="fp32 master weights.*torch.bfloat16"):
        apply_precision(model, "bf16", "cpu")


def test_gguf_errors_name_the_file(model_dir, tmp_path):
    with pytest.raises(ModelLoadError, match=r"missing.gguf: GGUF file not found"):
        load_model(str(model_dir), gguf_file="missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(ModelLoadError, match=r"bad.gguf: transformers could not load this GGUF file"):
        load_model(str(bad))


# ---------------------------------------------------------------- model.precision=auto and bf16 parity (issue 23)


def test_auto_is_bf16_only_where_the_hardware_has_it(monkeypatch, model_dir):
    from spro.models import precision as prec

    assert load_config().model.precision == "fp32"  # the default, and so the tiny presets, never change
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"avx2", "avx512f", "amx_bf16", "amx_tile"})
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    assert prec.resolve_precision("auto", "cpu", "bfloat16") == "fp32"  # bf16 autocast needs fp32 master weights
    assert prec.resolve_precision("auto", "cpu", logratio=True) == "fp32"  # SPRO / PRIME / KL: parity does not hold
    assert prec.resolve_precision("fp32", "cpu") == "fp32" and prec.resolve_precision("bf16", "cpu") == "bf16"
    model, _ = load_model(str(model_dir))
    assert autocast_dtype(apply_precision(model, "auto", "cpu")) == torch.bfloat16
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(prec, "_cpu_vendor", lambda: "AuthenticAMD")  # Zen 4: bf16 measured 2.1x fp32's rate
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(prec, "_cpu_vendor", lambda: "GenuineIntel")  # no AMX: measured 0.53x fp32's rate
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512bw"})  # bf16 only by emulation
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    model, _ = load_model(str(model_dir))
    assert autocast_dtype(apply_precision(model, "auto", "cpu")) is None
    assert load_config(overrides=["model.precision=auto"]).model.precision == "auto"


def test_bf16_process_reward_is_exactly_zero_at_step_1(model_dir, tmp_path):
    over = small_overrides(model_dir, tmp_path / "run", total_steps=1, **{"model.precision": "bf16"})
    t = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
    _, batch = t.rollout()
    old = t._logp_fn(t.model, batch)
    ref = t._logp_fn(t.ref, batch)
    assert torch.equal(old, ref)  # pi_old == pi_ref: the process reward beta * (log pi_old - log pi_ref) is 0
    t.train()
    assert read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]["process/reward_abs_mean"] == 0.0


def test_bf16_parity_with_fp32(model_dir, tmp_path):
    """After a few fp32 updates (pi_old != pi_ref), the bf16 log-probs of the same tokens stay close to the
    fp32 ones, and the bf16 error of the process term log pi_old - log pi_ref is well below the term itself."""
    over = small_overrides(model_dir, tmp_path / "run", total_steps=3, **{"rollout.max_new_tokens": 16})
    t = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
    t.train()
    _, batch = t.rollout()
    m = batch.completion_mask.bool()
    lp = {}
    for name in ("fp32", "bf16"):
        pol, ref = copy.deepcopy(t.model), copy.deepcopy(t.ref)
        apply_precision(pol, name, "cpu")
        apply_precision(ref, name, "cpu")
        lp[name] = (t._logp_fn(pol, batch)[m], t._logp_fn(ref, batch)[m])
    diff = (lp["bf16"][0] - lp["fp32"][0]).abs()
    assert float(diff.max()) < 0.05 and float(diff.mean()) < 0.01
    signal = lp["fp32"][0] - lp["fp32"][1]
    noise = (lp["bf16"][0] - lp["bf16"][1]) - signal
    assert float(signal.abs().mean()) > 0
    assert float(noise.abs().mean()) < 0.1 * float(signal.abs().mean())


def test_bf16_forward_keeps_the_signature_generate_reads(model_dir):
    """generate passes logits_to_keep=1 in the pre-fill only to a forward whose signature has it."""
    import inspect

    from spro.rollout.hf import _cache_kw

    model, _ = load_model(str(model_dir))
    apply_precision(model, "bf16", "cpu")
    assert "logits_to_keep" in inspect.signature(model.forward).parameters and _cache_kw(model) == "cache"
    shapes = []
    model.get_output_embeddings().register_forward_hook(lambda mod, i, o: shapes.append(tuple(o.shape[:2])))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=3,
                       pad_token_id=0, eos_token_id=None)
    assert shapes == [(1, 1)] * 3  # the pre-fill's output layer at the last prompt position only


def test_auto_in_the_trainer(monkeypatch, model_dir, tmp_path):
    """auto: bf16 for GRPO without a KL term, fp32 for SPRO (its process reward is a log-ratio to pi_ref)."""
    from spro.models import precision as prec

    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"amx_bf16"})
    for algo, want in (("grpo", torch.bfloat16), ("spro", None)):
        over = small_overrides(model_dir, tmp_path / algo, algorithm=algo, **{"model.precision": "auto"})
        t = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
        assert autocast_dtype(t.model) == want and autocast_dtype(t.ref) == want

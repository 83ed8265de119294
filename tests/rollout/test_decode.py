"""rollout.backend=decode: spro's own decode loop samples from the model's distribution (issue 23)."""

from __future__ import annotations

import functools

import pytest
import torch

from helpers import REWARDS, read_jsonl, small_overrides
from spro.config import ConfigError, load_config
from spro.models.loading import load_model
from spro.models.logprobs import sequence_logps
from spro.models.packed import packable, packed_linears, packing_available
from spro.models.precision import apply_precision
from spro.rollout import decode
from spro.rollout.decode import DecodeBackend, filter_logits, sample_from_logits
from spro.rollout.hf import HFGenerateBackend


def _chi2(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Chi-square statistic over the cells of positive probability, and its degrees of freedom."""
    keep = probs > 0
    expected = counts.sum() * probs[keep]
    return float(((counts[keep] - expected) ** 2 / expected).sum()), int(keep.sum()) - 1


def _bound(df: int) -> float:
    return df + 5 * (2 * df) ** 0.5  # mean df, sd sqrt(2 df): far in the tail


def test_sample_from_logits_draws_the_distribution():
    """Inverse transform sampling over blocks: counts follow softmax(x) (chi-square), tokens of probability 0
    are never drawn, also where the vocabulary is not a multiple of the block and the last block ends in -inf."""
    g = torch.Generator().manual_seed(0)
    V = 1000
    x = torch.randn(V, generator=g) * 2
    x[::7] = float("-inf")
    x[-30:] = float("-inf")
    probs = torch.softmax(x.double(), -1)
    n = 200_000
    draws = sample_from_logits(x.expand(n, V).contiguous(), generator=g, block=64)
    counts = torch.bincount(draws, minlength=V).double()
    assert counts[probs == 0].sum() == 0
    stat, df = _chi2(counts, probs)
    assert stat < _bound(df)
    other, _ = _chi2(counts, torch.softmax(x.double() * 1.1, -1))
    assert other > _bound(df)  # the test can tell a slightly different distribution


def test_sample_from_logits_of_one_possible_token_draws_it():
    x = torch.full((50, 300), float("-inf"))
    x[:, 257] = 0.0
    assert sample_from_logits(x, block=256).eq(257).all()


def test_filter_logits_drops_what_transformers_warpers_drop():
    """temperature, top-k, top-p, min-p as transformers' warpers in generate's order: the same tokens set to
    -inf and the same values elsewhere."""
    from transformers.generation.logits_process import (MinPLogitsWarper, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 500, generator=g) * 3
    for T, k, p, m in [(1.0, 0, 1.0, 0.0), (0.7, 40, 1.0, 0.0), (1.3, 0, 0.9, 0.0), (1.0, 0, 1.0, 0.05),
                       (0.9, 100, 0.95, 0.02), (1.0, 0, 0.3, 0.0)]:
        want = TemperatureLogitsWarper(T)(None, logits.clone())
        if k:
            want = TopKLogitsWarper(k)(None, want)
        if p < 1:
            want = TopPLogitsWarper(p)(None, want)
        if m:
            want = MinPLogitsWarper(m)(None, want)
        got = filter_logits(logits, T, k, p, m)
        assert torch.equal(torch.isinf(got), torch.isinf(want)), (T, k, p, m)
        assert torch.allclose(got[~torch.isinf(got)], want[~torch.isinf(want)]), (T, k, p, m)


@pytest.mark.parametrize("pack", [True, False])
def test_the_loop_samples_from_the_training_forward_s_distribution(model_dir, monkeypatch, pack):
    """The logits each decode step samples from equal the training forward's at the sampled tokens (the
    log-probs of the loss): same tokens, log-probs within fp32 rounding."""
    model, tok = load_model(str(model_dir))
    model.eval()
    seen = []
    real = decode.filter_logits
    monkeypatch.setattr(decode, "filter_logits", lambda x, *a: seen.append(x.clone()) or real(x, *a))
    torch.manual_seed(0)
    batch = DecodeBackend(model, tok, max_new_tokens=10, temperature=1.3, pack=pack).generate(["12+3=", "7*8-1="], 4)
    with torch.no_grad():
        want, _ = sequence_logps(model, batch, temperature=1.3)
    T = batch.completion_ids.shape[1]
    assert len(seen) == T
    got = torch.stack([torch.log_softmax(s.float() / 1.3, -1) for s in seen], 1)  # [B, T, V]
    got = got.gather(-1, batch.completion_ids[..., None]).squeeze(-1)
    m = batch.completion_mask.bool()
    assert m.sum() > 8
    assert torch.allclose(got[m], want[m], atol=1e-5), (got[m] - want[m]).abs().max()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_decode_sampled_token_statistics_match_the_model(model_dir, precision):
    """Many samples of the first response token follow softmax(logits / T) (chi-square), as the hf backend's
    (tests/rollout/test_sampling.py)."""
    model, tok = load_model(str(model_dir))
    apply_precision(model, precision, "cpu")
    model.eval()
    torch.manual_seed(0)
    batch = DecodeBackend(model, tok, max_new_tokens=1, temperature=1.5).generate(["12+3="], 4000)
    ids = tok(["12+3="], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].float()
    counts = torch.bincount(batch.completion_ids[:, 0], minlength=logits.numel()).double()
    stat, df = _chi2(counts, torch.softmax(logits.double() / 1.5, -1))
    assert stat < _bound(df)
    other, _ = _chi2(counts, torch.softmax(logits.double() / 0.5, -1))
    assert other > _bound(df)


def test_decode_and_hf_backends_give_the_same_batch_layout(model_dir):
    """Same prompts, masks and shapes as the hf backend; greedy (top_k=1) gives the same tokens."""
    model, tok = load_model(str(model_dir))
    model.eval()
    prompts = ["12+3=", "7*8-1=", "5="]
    a = HFGenerateBackend(model, tok, max_new_tokens=12, top_k=1).generate(prompts, 2)
    b = DecodeBackend(model, tok, max_new_tokens=12, top_k=1).generate(prompts, 2)
    assert torch.equal(a.prompt_ids, b.prompt_ids) and torch.equal(a.prompt_mask, b.prompt_mask)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.completion_mask, b.completion_mask)
    assert torch.equal(a.truncated, b.truncated) and torch.equal(a.group_ids, b.group_ids)
    assert a.completions == b.completions


@pytest.mark.skipif(not packing_available(), reason="this torch build has no oneDNN packed linear ops")
def test_packed_linears_give_the_plain_outputs_and_are_undone(model_dir):
    model, tok = load_model(str(model_dir))
    model.eval()
    ids = tok(["12+3=45", "7*8-1=5"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with packed_linears(model, rows=2) as n:
            got = model(input_ids=ids).logits
        again = model(input_ids=ids).logits
    assert n == len(packable(model)) > 0
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(again, want)
    assert not any("forward" in vars(m) or hasattr(m, "_spro_packed") for m in model.modules())
    # under bf16 autocast: the layers in bf16 as autocast multiplies them, the output layer in fp32
    apply_precision(model, "bf16", "cpu")
    head = model.get_output_embeddings()
    head_forward = vars(head)["forward"]
    assert {d for m, d in packable(model) if m is not head} == {torch.bfloat16}
    assert [d for m, d in packable(model) if m is head] == [torch.float32]
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with packed_linears(model, rows=2):
            got = model(input_ids=ids).logits
    assert got.dtype == want.dtype == torch.float32
    assert (got - want).abs().max() < 0.05 * want.abs().max()  # bf16 rounding of the layers' outputs
    assert vars(head)["forward"] is head_forward  # the precision's own output-layer forward is back


def test_repetition_penalty_with_the_decode_backend_is_refused():
    with pytest.raises(ConfigError, match="rollout.backend=hf"):
        load_config(overrides=["rollout.backend=decode", "rollout.repetition_penalty=1.2"])


def test_training_with_the_decode_backend_is_deterministic(model_dir, tmp_path):
    """Two steps of SPRO with rollout.backend=decode: the same command gives the same numbers."""
    from spro.trainer import train

    runs = []
    for name in ("a", "b"):
        cfg = load_config(overrides=small_overrides(model_dir, tmp_path / name, "spro", **{"rollout.backend": "decode"}))
        runs.append(read_jsonl(train(cfg, reward_funcs=REWARDS) / "metrics.jsonl"))
    assert len(runs[0]) == 2
    keys = ("reward/mean", "length/mean", "loss", "grad_norm", "process/msa_abs_mean")
    assert [[m[k] for k in keys] for m in runs[0]] == [[m[k] for k in keys] for m in runs[1]]


def test_decode_without_a_shared_prompt_prefix_pre_fills_every_copy(model_dir, monkeypatch):
    """model.share_prompt_prefix=false: G copies of each prompt are pre-filled (no cache repeated), with the same
    greedy tokens as the shared prefix."""
    from spro.rollout import make_backend

    model, tok = load_model(str(model_dir))
    model.eval()
    r = load_config(overrides=["rollout.backend=decode", "rollout.top_k=1", "rollout.max_new_tokens=10"]).rollout
    prompts = ["12+3=", "7*8-1=", "5="]
    rows = []
    real = type(model).forward
    spy = functools.wraps(real)(lambda self, *a, **k: rows.append(k["input_ids"].shape) or real(self, *a, **k))
    monkeypatch.setattr(type(model), "forward", spy)
    shared = make_backend("decode", model, tok, r).generate(prompts, 4)
    assert rows[0][0] == 3
    rows.clear()
    copies = make_backend("decode", model, tok, r, share_prompt_prefix=False).generate(prompts, 4)
    assert rows[0][0] == 12 and rows[0][1] > 1
    assert torch.equal(shared.completion_ids, copies.completion_ids)
    assert torch.equal(shared.completion_mask, copies.completion_mask)


def test_decode_packs_once_per_call_and_undoes_it_when_a_step_fails(model_dir, monkeypatch):
    """generation_batch_size chunks share one packing; an error inside the loop leaves no packed layer behind."""
    model, tok = load_model(str(model_dir))
    model.eval()
    entered = []
    real_pack = decode.packed_linears

    def counting(m, rows):
        entered.append(rows)
        return real_pack(m, rows)

    monkeypatch.setattr(decode, "packed_linears", counting)
    torch.manual_seed(0)
    batch = DecodeBackend(model, tok, max_new_tokens=6, generation_batch_size=4).generate(["1=", "2=", "3="], 2)
    assert entered == [4] and batch.completion_ids.shape[0] == 6
    calls = []
    real = type(model).forward

    @functools.wraps(real)
    def failing(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(self, *a, **k)

    monkeypatch.setattr(type(model), "forward", failing)
    with pytest.raises(RuntimeError, match="boom"):
        DecodeBackend(model, tok, max_new_tokens=6).generate(["1=", "2="], 2)
    assert not any("forward" in vars(m) or hasattr(m, "_spro_packed") for m in model.modules())


def test_sample_from_logits_refuses_nan_and_all_filtered_rows():
    x = torch.zeros(3, 300)
    x[1, 5] = float("nan")
    with pytest.raises(RuntimeError, match=r"response\(s\) \[1\]"):
        sample_from_logits(x)
    x = torch.zeros(2, 300)
    x[0] = float("-inf")
    with pytest.raises(RuntimeError, match=r"\[0\].*filtered out"):
        sample_from_logits(x)

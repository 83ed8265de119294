"""LoRA through peft: only adapters train, the reference is the base with adapters disabled (no copy),
checkpoints hold adapters, resume / eval / export load them."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import REWARDS, read_jsonl, small_overrides

from spro.config import ConfigError, load_config
from spro.models.loading import load_model
from spro.models.logprobs import logps_no_grad
from spro.models.lora import AdapterDisabled
from spro.trainer import Trainer

LORA = {"model.lora.rank": 4, "model.lora.alpha": 8, "algorithm.kl_coef": 0.01}


def test_reference_logprobs_with_adapters_disabled_equal_the_base_models(model_dir, tmp_path):
    t = Trainer(load_config(overrides=small_overrides(model_dir, tmp_path / "run", **LORA)), reward_funcs=REWARDS)
    assert isinstance(t.ref, AdapterDisabled) and t.ref.model is t.model  # no second copy of the weights
    trainable = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {id(p) for g in t.optimizer.param_groups for p in g["params"]} == \
        {id(p) for p in t.model.parameters() if p.requires_grad}
    base, _ = load_model(str(model_dir))
    base_before = {k: v.clone() for k, v in base.state_dict().items()}
    for _ in range(2):
        t.train_step()  # two steps: the adapters are not zero any more
    lora_b = [p for n, p in t.model.named_parameters() if "lora_B" in n]
    assert any(float(p.detach().abs().max()) > 0 for p in lora_b)
    _, batch = t.rollout()
    temp = t.cfg.rollout.temperature
    ref = logps_no_grad(t.ref, batch, temperature=temp, with_entropy=False, group_size=t.G)[0]
    want = logps_no_grad(base.eval(), batch, temperature=temp, with_entropy=False, group_size=t.G)[0]
    mask = batch.completion_mask.bool()
    assert torch.allclose(ref[mask], want[mask], atol=1e-5)
    policy = logps_no_grad(t.model, batch, temperature=temp, with_entropy=False, group_size=t.G)[0]
    assert (policy[mask] - want[mask]).abs().max() > 1e-4  # the adapters do change the policy
    frozen = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
              for k, v in t.model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(frozen[k], base_before[k]) for k in base_before)  # base weights untouched


def test_lora_checkpoints_resume_eval_and_export(model_dir, tmp_path, capsys):
    from spro.cli import main

    run = tmp_path / "run"
    over = small_overrides(model_dir, run, total_steps=2, save_every=1, **LORA)
    first = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
    first.train()
    ckpt = run / "checkpoints" / "step-000002"
    assert (ckpt / "adapter_config.json").is_file() and (ckpt / "adapter_model.safetensors").is_file()
    assert not (ckpt / "model.safetensors").exists()  # adapters only
    assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == str(model_dir.resolve())

    # resume from step 1 gives the same step-2 metrics as the run that never stopped
    full = read_jsonl(run / "metrics.jsonl")
    run2 = tmp_path / "run2"
    Trainer(load_config(overrides=small_overrides(model_dir, run2, total_steps=1, **LORA)), reward_funcs=REWARDS).train()
    resumed = Trainer(load_config(overrides=small_overrides(model_dir, run2, total_steps=2, **LORA)),
                      resume=run2, reward_funcs=REWARDS)
    assert isinstance(resumed.ref, AdapterDisabled)
    assert [n for n, p in resumed.model.named_parameters() if p.requires_grad] == \
        [n for n, p in first.model.named_parameters() if p.requires_grad]
    resumed.train()
    again = read_jsonl(run2 / "metrics.jsonl")
    assert again[1]["reward/mean"] == pytest.approx(full[1]["reward/mean"])
    assert again[1]["loss"] == pytest.approx(full[1]["loss"], rel=1e-4, abs=1e-6)

    # eval loads base + adapters; export writes the merged model, which generates the same greedy text
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(run), "--task", "arithmetic", "--n", "4", "--max-new-tokens", "6",
                 "--no-progress", "--out", str(out)]) == 0
    merged_dir = tmp_path / "merged"
    assert main(["export", "--model", str(run), "--output", str(merged_dir)]) == 0
    assert (merged_dir / "config.json").is_file() and not (merged_dir / "adapter_config.json").exists()
    out2 = tmp_path / "eval2.json"
    assert main(["eval", "--model", str(merged_dir), "--task", "arithmetic", "--n", "4", "--max-new-tokens", "6",
                 "--no-progress", "--out", str(out2)]) == 0
    a, b = json.loads(out.read_text()), json.loads(out2.read_text())
    assert [s["greedy"] for s in a["examples"]] == [s["greedy"] for s in b["examples"]]
    merged, _ = load_model(str(merged_dir))
    peft_model, _ = load_model(str(ckpt), adapters="train")
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.allclose(merged(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-5)


def test_lora_with_prime_is_refused_and_bad_targets_are_named(model_dir, tmp_path):
    with pytest.raises(ConfigError, match="model.lora.rank > 0 is not supported with algorithm.name=prime"):
        load_config(overrides=small_overrides(model_dir, tmp_path, "prime", **LORA))
    cfg = load_config(overrides=small_overrides(model_dir, tmp_path, **LORA, **{"model.lora.target_modules": "[nope]"}))
    with pytest.raises(ValueError, match="model.lora: .*nope"):
        Trainer(cfg, reward_funcs=REWARDS)

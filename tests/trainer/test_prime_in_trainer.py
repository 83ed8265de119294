"""PRIME in the trainer: the built-in implicit PRM, PRIME's order, the accuracy filter, checkpoints."""

from __future__ import annotations

import json

import math

import pytest
import torch
from safetensors.torch import load_file

from helpers import (
    RecordingPRM, launch_two_processes, read_jsonl, small_overrides, train_killed_at,
)
from spro.trainer import checkpoint as ck
from spro.config import ConfigError, load_config
from spro.algorithms.prm import ImplicitPRM
from spro.algorithms.prime import PRIME
from spro.trainer import METRIC_KEYS, Trainer, train


def parity_reward(prompts, completions, **kw):
    """1 when the completion has an even number of digits: about half right, varies within groups."""
    return [float(sum(ch.isdigit() for ch in c) % 2 == 0) for c in completions]


def banded_reward(prompts, completions, **kw):
    """Per batch of 2 groups x 4: the first group all right (accuracy 1, filtered), the second 1010."""
    return [1.0 if (i // 4) % 2 == 0 or i % 2 == 0 else 0.0 for i in range(len(completions))]


def all_right(prompts, completions, **kw):
    return [1.0] * len(completions)


def _cfg(model_dir, out, reward="parity", **extra):
    over = small_overrides(model_dir, out, "prime", **{"data.rewards": f"[{{name: {reward}}}]",
                                                         "data.accuracy_reward": reward,
                                                         "algorithm.prime.prm_lr": 1e-3, **extra})
    return load_config(overrides=over)


REWARDS = {"parity": parity_reward, "banded": banded_reward, "all_right": all_right}


def _prm_weights(ckpt):
    """The PRM's full state dict (tied weights included) as saved in checkpoint ``ckpt``."""
    from safetensors.torch import load_model

    from spro.models.loading import load_model_and_tokenizer

    model = load_model_and_tokenizer(ckpt)[0]
    load_model(model, str(ckpt / "algorithm" / "model.safetensors"))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_prime_trains_policy_and_prm_and_logs_its_cost(model_dir, tmp_path):
    cfg = _cfg(model_dir, tmp_path / "run", **{"algorithm.prime.filter": False})
    t = Trainer(cfg, reward_funcs=REWARDS)
    assert isinstance(t.algorithm.prm, ImplicitPRM) and t.algorithm.prm.model is not t.model and t.algorithm.prm.model is not t.ref
    assert t.algorithm.prm.beta == 0.05 and t.algorithm.prm.optimizer.param_groups[0]["lr"] == 1e-3
    out = t.train()
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        for k in METRIC_KEYS + PRIME.metric_keys + ("prm/loss", "prm/accuracy", "prm/grad_norm", "prm/lr"):
            assert m[k] is not None and math.isfinite(m[k]), (k, m[k])
        assert m["time/prm"] > 0 and m["prm/grad_norm"] > 0 and m["prime/filtered_frac"] == 0.0
        assert m["prime/skipped"] == 0.0 and m["prm/lr"] == pytest.approx(1e-3)
        # the PRM's time is part of the step's and not of the log-prob pass's
        assert m["time/rollout"] + m["time/logprob"] + m["time/prm"] + m["time/update"] <= m["time/step"]
    # first step: the PRM starts as the reference, so its loss is exactly BCE at score 0 = log 2
    assert metrics[0]["prm/loss"] == pytest.approx(math.log(2), rel=1e-5)
    start = load_file(str(model_dir / "model.safetensors"))
    ckpt = out / "checkpoints" / "step-000002"
    policy, prm = load_file(str(ckpt / "model.safetensors")), _prm_weights(ckpt)
    assert any(not torch.equal(start[k], policy[k]) for k in start)
    assert any(not torch.equal(start[k], prm[k]) for k in start)
    assert any(not torch.equal(policy[k], prm[k]) for k in prm)  # two different models
    assert (ckpt / "algorithm" / "state.pt").is_file()


def test_prime_order_before_and_after(model_dir, tmp_path, monkeypatch):
    """prm_update=before (PRIME's default): the advantage's prm_logp comes from the updated PRM;
    after: from the PRM as it was, which at step 1 is the reference itself (q = 0)."""
    seen = {}
    for order in ("before", "after"):
        cfg = _cfg(model_dir, tmp_path / order, total_steps=1, **{"algorithm.prime.filter": False,
                                                                   "algorithm.prime.prm_update": order,
                                                                   "algorithm.prime.prm_lr": "null"})
        t = Trainer(cfg, reward_funcs=REWARDS)
        assert t.algorithm.prm.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)  # null: 2 x optim.lr
        real = t.algorithm.advantages

        def spy(x, order=order, t=t):
            seen[order] = (x.extra["prm_logp"].clone(), x.ref_logp.clone(), x.mask, t.algorithm.options.prm_beta)
            return real(x)

        t.algorithm.advantages = spy
        t.train()
    for order, (prm_logp, ref_logp, mask, beta) in seen.items():
        assert beta == 0.05
        diff = (prm_logp - ref_logp)[mask].abs().max()
        if order == "after":
            assert diff < 1e-5, diff
        else:
            assert diff > 1e-4, diff


def test_filter_drops_groups_outside_the_band(model_dir, tmp_path, monkeypatch):
    sizes = {"prm": [], "ppo": []}
    real_update, real_ppo = ImplicitPRM.update, Trainer.ppo_update

    def prm_update(self, batch, labels, ref_logp=None):
        sizes["prm"].append((len(batch), labels.tolist(), tuple(ref_logp.shape)))
        return real_update(self, batch, labels, ref_logp=ref_logp)

    def ppo_update(self, s, adv, step):
        sizes["ppo"].append((len(s.batch), tuple(adv.shape), s.fused is not None and s.fused[0].shape[0]))
        return real_ppo(self, s, adv, step)

    monkeypatch.setattr(ImplicitPRM, "update", prm_update)
    monkeypatch.setattr(Trainer, "ppo_update", ppo_update)
    out = train(_cfg(model_dir, tmp_path / "run", reward="banded", **{"algorithm.prime.refill": 1}),
                reward_funcs=REWARDS)
    # no refill: group 0 (accuracy 1.0) is dropped, group 1 (accuracy 0.5) kept, at both steps
    assert [s[:2] for s in sizes["prm"]] == [(4, [1.0, 0.0, 1.0, 0.0])] * 2
    assert all(s[2][0] == 4 for s in sizes["prm"])
    assert sizes["ppo"] == [(4, (4, sizes["ppo"][0][1][1]), 4)] * 2
    metrics = read_jsonl(out / "metrics.jsonl")
    for m in metrics:
        assert m["prime/filtered_frac"] == 0.5 and m["prime/skipped"] == 0.0
        assert m["accuracy"] == pytest.approx(6 / 8)  # the metrics still describe the whole batch
        assert m["loss"] is not None and m["grad_norm"] > 0

    # with mini-batches and accumulation (no fused pass) the short batch also works
    sizes["ppo"].clear()
    train(_cfg(model_dir, tmp_path / "mb", reward="banded", total_steps=1,
               **{"algorithm.mini_batch_size": 4, "algorithm.grad_accum_steps": 2, "algorithm.prime.refill": 1}),
          reward_funcs=REWARDS)
    assert sizes["ppo"] == [(4, sizes["ppo"][0][1], False)]


def test_refill_samples_more_prompts_until_the_batch_is_full(model_dir, tmp_path, monkeypatch):
    """PRIME's default refill: a second round of prompts fills the batch with prompts that pass the filter."""
    sizes = []
    real_ppo = Trainer.ppo_update

    def ppo_update(self, s, adv, step):
        sizes.append((len(s.batch), s.x.correct.float().view(-1, 4).mean(1).tolist(), s.batch.prompts[::4]))
        return real_ppo(self, s, adv, step)

    monkeypatch.setattr(Trainer, "ppo_update", ppo_update)
    out = train(_cfg(model_dir, tmp_path / "run", reward="banded"), reward_funcs=REWARDS)
    assert [n for n, _, _ in sizes] == [8, 8] and all(acc == [0.5, 0.5] for _, acc, _ in sizes)
    # four different prompts per step (two rounds of two), none trained twice across the steps
    prompts = [p for _, _, ps in sizes for p in ps]
    assert len(set(prompts)) == 4
    for m in read_jsonl(out / "metrics.jsonl"):
        assert m["rollout/rounds"] == 2.0 and m["prime/filtered_frac"] == 0.5
        assert m["accuracy"] == pytest.approx(12 / 16)  # over every sampled response (both rounds)
    state = json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["data_position"] == 8  # 2 steps x 2 rounds x 2 prompts


def test_a_fully_filtered_batch_skips_the_update(model_dir, tmp_path):
    out = train(_cfg(model_dir, tmp_path / "run", reward="all_right", total_steps=1), reward_funcs=REWARDS)
    (m,) = read_jsonl(out / "metrics.jsonl")
    assert m["prime/skipped"] == 1.0 and m["prime/filtered_frac"] == 1.0
    assert m["loss"] is None and m["grad_norm"] is None and "prm/loss" not in m
    assert m["accuracy"] == 1.0 and m["time/prm"] >= 0
    start = load_file(str(model_dir / "model.safetensors"))
    ckpt = out / "checkpoints" / "step-000001"
    policy, prm = load_file(str(ckpt / "model.safetensors")), _prm_weights(ckpt)
    assert all(torch.equal(start[k], policy[k]) for k in start)
    assert all(torch.equal(start[k], prm[k]) for k in start)


def test_a_custom_prm_without_ref_logp_and_config_checks(model_dir, tmp_path):
    from spro.models.loading import load_model_and_tokenizer

    prm = RecordingPRM(load_model_and_tokenizer(model_dir)[0])
    out = train(_cfg(model_dir, tmp_path / "run", reward="banded", **{"algorithm.prime.filter": False}),
                prm=prm, reward_funcs=REWARDS)
    assert [(n, labels) for n, _, labels in prm.calls] == [(8, [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0])] * 2  # 0/1 correctness labels
    assert all(m["prm/loss"] == 0.5 for m in read_jsonl(out / "metrics.jsonl"))
    with pytest.raises(ConfigError, match="algorithm.prime.filter_low / filter_high must satisfy"):
        _cfg(model_dir, tmp_path / "x", **{"algorithm.prime.filter_low": 0.9})
    with pytest.raises(ConfigError, match="algorithm.prime.prm_lr must be > 0"):
        _cfg(model_dir, tmp_path / "x", **{"algorithm.prime.prm_lr": 0})


def test_kill_and_resume_restores_the_prm(model_dir, tmp_path, monkeypatch):
    def cfg(out):
        return _cfg(model_dir, out, total_steps=3, save_every=2, **{"algorithm.prime.filter": False})

    full = train(cfg(tmp_path / "full"), reward_funcs=REWARDS)
    train_killed_at(2, monkeypatch, cfg(tmp_path / "killed"), reward_funcs=REWARDS)
    assert [p.name for p in ck.list_checkpoints(tmp_path / "killed" / "checkpoints")] == ["step-000002"]
    train(cfg(tmp_path / "killed"), resume=tmp_path / "killed", reward_funcs=REWARDS)
    a, b = read_jsonl(full / "metrics.jsonl"), read_jsonl(tmp_path / "killed" / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2, 3]
    for ma, mb in zip(a, b):
        for k in ("reward/mean", "accuracy", "entropy", "kl", "loss", "grad_norm", "prm/loss",
                  "prm/accuracy", "prm/score_mean", "prm/grad_norm"):
            assert ma[k] == mb[k], (ma["step"], k, ma[k], mb[k])
    wa = _prm_weights(full / "checkpoints" / "step-000003")
    wb = _prm_weights(tmp_path / "killed" / "checkpoints" / "step-000003")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    sa = torch.load(full / "checkpoints" / "step-000003" / "algorithm" / "state.pt", weights_only=True)
    assert sa["num_updates"] == 3


DDP_SCRIPT = """
import sys
import torch
sys.path[:0] = [{tests!r}, {here!r}]
from helpers import small_overrides
from spro.config import load_config
from spro.trainer import Trainer
from test_prime_in_trainer import REWARDS

model_dir, out = sys.argv[1], sys.argv[2]
over = small_overrides(model_dir, out, "prime", device="cpu", total_steps=2, **{{
    "rollout.prompts_per_step": 4, "data.rewards": "[{{name: parity}}]", "data.accuracy_reward": "parity",
    "algorithm.prime.prm_lr": 1e-3,
    "algorithm.prime.filter": False}})
t = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
start = {{n: p.detach().clone() for n, p in t.algorithm.prm.model.named_parameters()}}
t.train()
torch.save({{"policy": {{n: p.detach().clone() for n, p in t.model.named_parameters()}},
            "prm": {{n: p.detach().clone() for n, p in t.algorithm.prm.model.named_parameters()}}, "prm_start": start}},
           f"{{out}}/rank{{t.rank}}.pt")
"""


def test_two_processes_keep_one_prm(model_dir, tmp_path):
    """With two processes the PRM's gradients are averaged: both hold the same, trained PRM."""
    from pathlib import Path

    script = tmp_path / "run_ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parents[1]), here=str(Path(__file__).parent)))
    out = tmp_path / "run"
    out.mkdir()
    launch_two_processes(script, model_dir, out)
    r0, r1 = (torch.load(out / f"rank{i}.pt", weights_only=False) for i in (0, 1))
    for part in ("policy", "prm"):
        for name, p in r0[part].items():
            assert torch.equal(p, r1[part][name]), (part, name)
    assert any(not torch.equal(p, r0["prm_start"][n]) for n, p in r0["prm"].items())
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2] and all(m["prm/grad_norm"] > 0 for m in metrics)

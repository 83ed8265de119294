"""Two-process data-parallel training on CPU (accelerate launch, gloo).

Every group is generated on one process, so the advantages each process computes equal those
computed by a single process on the whole (gathered) batch; the gradient is that of the loss over
the whole batch (token-mean: over all tokens of both processes), so the weights stay identical on
both processes; metrics are reduced over processes and only the main process writes logs and
checkpoints.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import launch_two_processes, read_jsonl, save_small_model
from spro.algorithms.core import spro_advantage

SCRIPT = textwrap.dedent(
    """
    import dataclasses
    import sys
    import torch
    sys.path.insert(0, {tests!r})
    from helpers import REWARDS, small_overrides
    from spro.config import load_config
    from spro.rollout.batch import completion_mask_from_ids
    from spro.trainer import Trainer

    model_dir, out = sys.argv[1], sys.argv[2]
    cfg = load_config(overrides=small_overrides(model_dir, out, "spro", device="cpu", total_steps=2, save_every=1,
                                                **{{"rollout.prompts_per_step": 4, "algorithm.loss_agg": "token-mean",
                                                   "algorithm.grad_accum_steps": 2, "optim.max_grad_norm": 0}}))
    t = Trainer(cfg, reward_funcs=REWARDS)
    dumps, real = [], t.algorithm.advantages
    first = {{}}
    real_update, real_opt_step = t.ppo_update, t.optimizer.step

    def update_spy(s, adv, step):
        if step == 1:
            first.update(batch=s.batch, old_logp=s.x.logp, adv=adv, mask=s.x.mask)
        return real_update(s, adv, step)

    def opt_step_spy(*a, **k):
        first.setdefault("grads", {{n: p.grad.clone() for n, p in t.model.named_parameters()}})
        return real_opt_step(*a, **k)

    t.ppo_update, t.optimizer.step = update_spy, opt_step_spy
    real_generate = t.backend.generate

    def generate_shorter(prompts, G):  # the random model rarely ends early: end some responses at once
        b = real_generate(prompts, G)
        ids = b.completion_ids.clone()
        for i in range(len(ids)):
            if (i + t.rank) % 3 == 0:
                ids[i, (i + t.rank) % ids.shape[1]] = t.tok.eos_token_id
        mask, truncated = completion_mask_from_ids(ids, t.tok.eos_token_id)
        return dataclasses.replace(b, completion_ids=ids.masked_fill(mask == 0, t.tok.pad_token_id),
                                   completion_mask=mask, truncated=truncated)

    t.backend.generate = generate_shorter

    def spy(x):
        adv = real(x)
        dumps.append({{"rewards": x.rewards, "mask": x.mask.float(), "group_ids": x.group_ids, "logp": x.logp,
                      "ref_logp": x.ref_logp, "adv": adv, "beta": t.algorithm.options.beta}})
        return adv

    t.algorithm.advantages = spy
    t.train()
    params = {{n: p.detach().clone() for n, p in t.model.named_parameters()}}
    torch.save({{"dumps": dumps, "params": params, "world": t.world, "local_prompts": t.local_prompts, "first": first}},
               f"{{out}}/rank{{t.rank}}.pt")
    """
)


def _pad(ts, width):
    return torch.cat([F.pad(t, (0, width - t.shape[1])) for t in ts])


def test_two_processes_match_single_process_advantages(tmp_path):
    model_dir = save_small_model(tmp_path / "model")
    script = tmp_path / "run_ddp.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parents[1])))
    out = tmp_path / "run"
    out.mkdir()
    launch_two_processes(script, model_dir, out)

    r0, r1 = (torch.load(out / f"rank{i}.pt", weights_only=False) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["local_prompts"] == 2
    # data parallel: identical weights on both processes after the updates
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name

    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]  # written once, by the main process
    for step, (d0, d1) in enumerate(zip(r0["dumps"], r1["dumps"]), start=1):
        T = max(d0["mask"].shape[1], d1["mask"].shape[1])
        full = {k: _pad([d0[k], d1[k]], T) for k in ("mask", "logp", "ref_logp", "adv")}
        rewards = torch.cat([d0["rewards"], d1["rewards"]])
        groups = torch.cat([d0["group_ids"], d1["group_ids"] + r0["local_prompts"]])
        assert rewards.shape == (16,) and groups.bincount().tolist() == [4, 4, 4, 4]
        single = spro_advantage(rewards, full["logp"], full["ref_logp"], full["mask"], groups, beta=d0["beta"])
        torch.testing.assert_close(full["adv"], single, rtol=0, atol=1e-7)
        # metrics are over the whole batch of both processes
        m = metrics[step - 1]
        assert abs(m["reward/mean"] - float(rewards.mean())) < 1e-6
        lengths = full["mask"].sum(1).float()
        assert abs(m["length/mean"] - float(lengths.mean())) < 1e-6
        assert m["length/max"] == float(lengths.max())
    # step 1's gradient (averaged by data parallelism) is that of the token-mean loss over the tokens of both
    # processes, each with 2 accumulated micro-batches
    from spro.algorithms.losses import policy_loss
    from spro.models.loading import load_model_and_tokenizer
    from spro.models.logprobs import sequence_logps

    model = load_model_and_tokenizer(model_dir)[0]
    f0, f1 = r0["first"], r1["first"]
    n_tok = f0["mask"].sum() + f1["mask"].sum()
    assert f0["mask"].sum() != f1["mask"].sum()  # (else a mean of per-process means would pass too)
    total = sum(policy_loss(sequence_logps(model, f["batch"])[0], f["old_logp"], f["adv"], f["mask"], agg="token-mean",
                            normaliser=n_tok)[0] for f in (f0, f1))
    total.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(f0["grads"][name], p.grad, rtol=1e-4, atol=1e-7, msg=name)
        assert torch.equal(f0["grads"][name], f1["grads"][name]), name
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-000001", "step-000002"]
    rng = torch.load(out / "checkpoints" / "step-000002" / "rng_state.pt", weights_only=False)
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])


def test_accelerate_launch_spro_train_cli(tmp_path):
    """`accelerate launch -m spro train ...` with two CPU processes (torchrun + gloo)."""
    from helpers import small_overrides

    model_dir = save_small_model(tmp_path / "model")
    out = tmp_path / "run"
    over = small_overrides(model_dir, out, "grpo", device="cpu", total_steps=1,
                           **{"data.rewards": "[{name: arithmetic}]", "rollout.prompts_per_step": 4})
    launch_two_processes("-m", "spro", "train", *over)
    (m,) = read_jsonl(out / "metrics.jsonl")
    assert m["step"] == 1 and m["length/max"] <= 8
    assert (out / "checkpoints" / "step-000001" / "model.safetensors").is_file()


STOP_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, json
    sys.path.insert(0, {tests!r})
    from helpers import REWARDS, small_overrides
    from spro.config import load_config
    from spro.trainer import Trainer, train
    from spro.trainer.signals import TrainingStopped

    model_dir, out = sys.argv[1], sys.argv[2]
    cfg = load_config(overrides=small_overrides(model_dir, out, "spro", device="cpu", total_steps=4,
                                                **{{"rollout.prompts_per_step": 4}}))
    real = Trainer.score

    def score(self, rows, completions, *args, **kwargs):  # SIGTERM to process 1 only, during step 2
        if self.rank == 1 and self.step + 1 == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, rows, completions, *args, **kwargs)

    Trainer.score = score
    try:
        train(cfg, reward_funcs=REWARDS)
    except TrainingStopped as e:
        with open(os.path.join(out, f"stopped-{{os.environ['RANK']}}.txt"), "w") as f:
            f.write(str(e))
    """
)


@pytest.mark.slow  # (a second two-process launch)
def test_a_signal_to_one_process_stops_both_after_the_same_step(tmp_path):
    """The processes agree on the step to stop after (no one waits alone in a collective); one checkpoint is saved."""
    model_dir = save_small_model(tmp_path / "model")
    out = tmp_path / "run"
    script = tmp_path / "stop.py"
    script.write_text(STOP_SCRIPT.format(tests=str(Path(__file__).parents[1])))
    launch_two_processes(script, model_dir, out)
    said = [(out / f"stopped-{r}.txt").read_text() for r in (0, 1)]
    assert all("stopped by SIGTERM after step 2 of 4" in s for s in said), said
    assert [m["step"] for m in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]

"""Two-process data-parallel training on CPU (accelerate launch, gloo).

Every group is generated on one process, so the advantages each process computes equal those
computed by a single process on the whole (gathered) batch; gradients are averaged, so the
weights stay identical on both processes; metrics are reduced over processes and only the main
process writes logs and checkpoints.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F

from helpers import launch_two_processes, read_jsonl, save_small_model
from spro.algorithms.core import spro_advantage

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    sys.path.insert(0, {tests!r})
    from helpers import REWARDS, small_overrides
    from spro.config import load_config
    from spro.trainer import Trainer

    model_dir, out = sys.argv[1], sys.argv[2]
    cfg = load_config(overrides=small_overrides(model_dir, out, "spro", device="cpu", total_steps=2, save_every=1,
                                                **{{"rollout.prompts_per_step": 4}}))
    t = Trainer(cfg, reward_funcs=REWARDS)
    dumps, real = [], t.algorithm.advantages

    def spy(x):
        adv = real(x)
        dumps.append({{"rewards": x.rewards, "mask": x.mask.float(), "group_ids": x.group_ids, "logp": x.logp,
                      "ref_logp": x.ref_logp, "adv": adv, "beta": t.algorithm.options.beta}})
        return adv

    t.algorithm.advantages = spy
    t.train()
    params = {{n: p.detach().clone() for n, p in t.model.named_parameters()}}
    torch.save({{"dumps": dumps, "params": params, "world": t.world, "local_prompts": t.local_prompts}},
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

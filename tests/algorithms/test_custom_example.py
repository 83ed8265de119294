"""examples/custom_estimator.py: an algorithm from a module outside the package, trained and compared."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from helpers import small_overrides

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_estimator.py"


@pytest.fixture
def in_user_folder(tmp_path, monkeypatch):
    """A working directory holding a copy of the example, as a user's own module."""
    shutil.copy(EXAMPLE, tmp_path / "custom_estimator.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    from spro.algorithms import registry

    registry.list_algorithms()  # the built-in ones are registered on first use
    saved = dict(registry._REGISTRY)
    yield tmp_path
    sys.modules.pop("custom_estimator", None)
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_the_example_matches_a_loop(in_user_folder):
    from spro.algorithms import AdvantageInputs, get_algorithm

    cls = get_algorithm("custom_estimator:spro_loo")
    assert cls.name == "spro_loo" and cls.needs_reference
    g = torch.Generator().manual_seed(0)
    B, T = 6, 4
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 2:] = mask[4, 1:] = False
    x = AdvantageInputs(torch.tensor([1.0, 0, 0, 1, 1, 1]), mask, torch.tensor([0, 0, 0, 1, 1, 1]),
                        -torch.rand(B, T, generator=g), -torch.rand(B, T, generator=g))
    adv = cls(cls.Options(beta=0.5)).advantages(x)
    R = [[0.0] * T for _ in range(B)]
    for i in range(B):
        acc = 0.0
        for t in range(T):
            if mask[i, t]:
                acc += 0.5 * float(x.logp[i, t] - x.ref_logp[i, t])
                R[i][t] = acc
    from spro.algorithms.core import outcome_advantage

    out = outcome_advantage(x.rewards, x.group_ids)
    for i in range(B):
        for t in range(T):
            others = [R[k][t] for k in range(B) if k != i and x.group_ids[k] == x.group_ids[i] and mask[k, t]]
            want = (float(out[i]) + (R[i][t] - sum(others) / len(others) if others else 0.0)) if mask[i, t] else 0.0
            assert abs(float(adv[i, t]) - want) < 1e-5


def test_train_one_step_with_the_example(in_user_folder, model_dir):
    from spro.cli import main

    over = small_overrides(model_dir, in_user_folder / "run", "custom_estimator:spro_loo", total_steps=1,
                           **{"data.rewards": "[{name: arithmetic}]", "algorithm.spro_loo.beta": 0.1})
    assert main(["train", *over]) == 0
    (m,) = [json.loads(l) for l in (in_user_folder / "run" / "metrics.jsonl").read_text().splitlines()]
    assert m["step"] == 1 and m["loss"] is not None and m["kl"] is not None
    cfg = (in_user_folder / "run" / "config.yaml").read_text()
    assert "name: custom_estimator:spro_loo" in cfg and "spro_loo:\n    beta: 0.1" in cfg


def test_compare_the_example_with_grpo(in_user_folder, model_dir):
    from spro.cli import main

    over = [o for o in small_overrides(model_dir, in_user_folder / "x", total_steps=1,
                                       **{"data.rewards": "[{name: arithmetic}]"})
            if not o.startswith(("output_dir=", "algorithm.name="))]
    args = ["compare", "--algos", "grpo", "--variant", "loo:algorithm.name=custom_estimator:spro_loo", "--seeds", "1",
            "--out", str(in_user_folder / "cmp"), *over]
    assert main(args) == 0
    report = (in_user_folder / "cmp" / "report.md").read_text()
    assert "| loo |" in report and "| grpo |" in report

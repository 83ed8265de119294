"""The command line: overrides around options, reward shorthand."""

from __future__ import annotations

import pytest
import yaml

from spro.cli import main
from spro.config import ConfigError, RewardSpec, load_config, to_dict


def test_overrides_may_come_before_or_after_the_options(capsys):
    assert main(["train", "algorithm.name=grpo", "--preset", "tiny-random", "seed=7", "--print-config",
                 "optim.lr=3e-5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["algorithm"]["name"], printed["seed"], printed["optim"]["lr"]) == ("grpo", 7, 3e-5)
    same = load_config(preset="tiny-random", overrides=["algorithm.name=grpo", "seed=7", "optim.lr=3e-5"])
    assert printed == yaml.safe_load(yaml.safe_dump(to_dict(same)))


def test_rewards_by_bare_name():
    cfg = load_config(overrides=["data.rewards=[math, {name: format, weight: 0.2}]"])
    assert cfg.data.rewards == [RewardSpec("math", 1.0), RewardSpec("format", 0.2)]
    with pytest.raises(ConfigError, match=r"data.rewards\[0\]"):
        load_config(overrides=["data.rewards=[3]"])


def test_eval_accepts_a_run_folder(model_dir, tmp_path, capsys):
    import json

    from helpers import small_overrides

    run = tmp_path / "run"
    assert main(["train", *small_overrides(model_dir, run, total_steps=1, **{"data.rewards": "[arithmetic]"})]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(run), "--task", "arithmetic", "--n", "3", "--max-new-tokens", "4",
                 "--no-progress", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == str(run / "checkpoints" / "step-000001") and result["n"] == 3
    assert main(["eval", "--model", str(tmp_path), "--task", "arithmetic"]) == 2
    assert "neither a model folder" in capsys.readouterr().err

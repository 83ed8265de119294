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


def test_a_plugin_algorithms_options_are_in_train_help(tmp_path, monkeypatch, capsys):
    import sys
    import textwrap

    from spro.algorithms import registry

    (tmp_path / "my_help_algo.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        from spro.algorithms import register_algorithm
        from spro.options import Options, option

        @dataclass
        class DecayOptions(Options):
            gamma: float = option(0.9, help="Decay of the credit per step.", check=(lambda v: 0 < v <= 1, "in (0, 1]"))

        @register_algorithm("help_decay", options=DecayOptions)
        def decay(x, o):
            return x.mask.float()
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    try:
        with pytest.raises(SystemExit):
            main(["train", "algorithm.name=my_help_algo:decay", "--help"])
        text = capsys.readouterr().out
        assert "\nalgorithm.help_decay: " in text and "algorithm.help_decay.gamma = 0.9\n      Decay of the credit" in text
        with pytest.raises(ConfigError, match=r"algorithm.help_decay.gamma must be in \(0, 1\], got 2.0"):
            load_config(overrides=["algorithm.name=my_help_algo:decay", "algorithm.help_decay.gamma=2"])
        with pytest.raises(SystemExit):  # a plugin that does not import is named under the built-in ones
            main(["train", "algorithm.name=no_such_module:x", "--help"])
        assert "(not listed: " in capsys.readouterr().out
    finally:
        sys.modules.pop("my_help_algo", None)

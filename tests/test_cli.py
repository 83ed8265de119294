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


def _resolve(command, *argv):
    import argparse
    import importlib

    module = importlib.import_module(f"spro.commands.{command}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.resolve_config(parser.parse_intermixed_args(list(argv)))


def test_sft_takes_key_value_settings_with_the_flags_as_short_aliases():
    preset, cfg = _resolve("sft", "-o", "x", "--steps", "7", "task_kwargs.num_operands=[3,5]", "--task-knob",
                           "value_range=[0,9]", "lr=1e-3", "--prompt-template", "{prompt}\nAnswer:")
    assert preset == "weak" and (cfg.steps, cfg.lr, cfg.hidden_size) == (7, 1e-3, 64)
    assert cfg.task_kwargs == {"num_operands": [3, 5], "value_range": [0, 9]}
    assert cfg.prompt_template == "{prompt}\nAnswer:"  # a string key takes the flag's text as it is
    assert _resolve("sft", "-o", "x", "--steps", "7", "steps=9")[1].steps == 9  # key=value wins over the flag
    preset, cfg = _resolve("sft", "-o", "x", "data=a.jsonl", "--model", "m", "column_map.solution=response")
    assert preset == "finetune" and cfg.column_map == {"solution": "response"} and cfg.lr == 1e-5
    for argv, match in ((["stepz=3"], "unknown config key 'stepz'; did you mean 'steps'"),
                        (["lr=fast"], "lr: expected a number, got 'fast'"),
                        (["--steps", "0"], "steps must be a positive int"),
                        (["data=a.jsonl", "task=arithmetic"], "give data .* or task .*, not both"),
                        (["--task-knob", "num_operands"], "--task-knob 'num_operands': expected KEY=VALUE")):
        with pytest.raises(ValueError, match=match):
            _resolve("sft", "-o", "x", *argv)


def test_eval_takes_key_value_settings_with_the_flags_as_short_aliases():
    cfg = _resolve("eval", "model=m", "--k", "4", "task_kwargs.num_operands=[3,5]", "--task-knob", "value_range=[0,9]")
    assert (cfg.model, cfg.k, cfg.task) == ("m", 4, None)
    assert cfg.task_kwargs == {"num_operands": [3, 5], "value_range": [0, 9]}
    for argv, match in (([], "model: missing"), (["model=m", "n=0"], "n must be >= 1 or null, got 0"),
                        (["model=m", "temperature=.inf"], "temperature must be a finite number"),
                        (["model=m", "kk=2"], "unknown config key 'kk'; did you mean 'k'"),
                        (["model=m", "task=arithmetic", "--data", "a.jsonl"], "give one")):
        with pytest.raises(ValueError, match=match):
            _resolve("eval", *argv)

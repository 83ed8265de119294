"""TrainConfig: YAML + presets + typed overrides, suggestions for unknown keys, validation."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from spro import config as C
from spro.config import ConfigError, TrainConfig, load_config


def _walk(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield cls, f
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _walk(hints[f.name])


def test_every_field_has_help_text_and_defaults_validate():
    from spro.algorithms import get_algorithm, list_algorithms

    options = [get_algorithm(name).Options for name in list_algorithms()]
    for cls, f in list(_walk(TrainConfig)) + list(_walk(C.RewardSpec)) + [x for o in options for x in _walk(o)]:
        if f.metadata.get("sections"):
            continue
        assert f.metadata.get("help", "").strip(), f"{cls.__name__}.{f.name} has no help text"
    C.validate(TrainConfig())
    from spro.algorithms.spro import SPROOptions

    assert "arXiv:2507.01551" in SPROOptions.__dataclass_fields__["beta"].metadata["help"]


def test_yaml_then_overrides_with_types(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 3, "algorithm": {"name": "grpo", "spro": {"beta": 0.1}}, "optim.lr": "3e-5",
        "data": {"rewards": [{"name": "arithmetic", "weight": 2}]},
    }))
    cfg = load_config(path, ["optim.lr=2e-5", "logging.tensorboard=false", "algorithm.clip_eps_high=0.28",
                             "data.task_kwargs.num_operands=[2, 3]", "model.ref_model=null", "total_steps=7"])
    assert cfg.seed == 3 and cfg.algorithm.name == "grpo" and cfg.algorithm.spro.beta == 0.1
    assert cfg.optim.lr == 2e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.logging.tensorboard is False and cfg.algorithm.clip_eps_high == 0.28
    assert cfg.data.task_kwargs == {"num_operands": [2, 3]} and cfg.total_steps == 7
    assert cfg.data.rewards == [C.RewardSpec("arithmetic", 2.0)]
    assert load_config(path).optim.lr == 3e-5  # "3e-5" from YAML (a string in YAML 1.1) is a float


@pytest.mark.parametrize("override, match", [
    ("algorithm.nam=spro", "unknown config key 'algorithm.nam'; did you mean 'algorithm.name'"),
    ("lr=1e-5", "did you mean 'optim.lr'"),
    ("rollout.temprature=0.7", "did you mean 'rollout.temperature'"),
    ("algorithm.name=sprp", "algorithm.name: unknown algorithm 'sprp'.*did you mean 'spro'"),
    ("algorithm.spro.bta=0.1", "unknown config key 'algorithm.spro.bta'; did you mean 'algorithm.spro.beta'"),
    ("algorithm.sprro.beta=0.1", "unknown config key 'algorithm.sprro'"),
    ("algorithm.spro.beta=-1", "algorithm.spro.beta must be >= 0, got -1"),
    ("algorithm.spro.baseline=pooled_lo", "algorithm.spro.baseline: 'pooled_lo' is not one of .*did you mean 'pooled_loo'"),
    ("algorithm.prime.prm_lr=0", "algorithm.prime.prm_lr must be > 0 or null, got 0"),
    ("algorithm.loss_agg=token_mean", "did you mean 'token-mean'"),
])
def test_unknown_keys_and_choices_suggest_the_closest(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


@pytest.mark.parametrize("override, match", [
    ("rollout.num_generations=4.5", "rollout.num_generations: expected an integer, got 4.5"),
    ("logging.tensorboard=maybe", "logging.tensorboard: expected true or false"),
    ("optim.lr=fast", "optim.lr: expected a number"),
    ("data.rewards=arithmetic", "data.rewards: expected a list"),
    ("data.rewards=[{weight: 1}]", "data.rewards"),
    ("seed", "must look like key=value"),
])
def test_wrong_types_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_errors_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 1e-5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'optim\.lrr'; did you mean 'optim\.lr'"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("overrides, match", [
    (["rollout.num_generations=1"], "num_generations must be >= 2"),
    (["rollout.num_generations=4", "algorithm.mini_batch_size=6"], "divisible by the group size"),
    (["rollout.prompts_per_step=3", "rollout.num_generations=4", "algorithm.mini_batch_size=8"],
     r"batch .* = 12\) must be divisible by algorithm.mini_batch_size \(8\)"),
    (["algorithm.grad_accum_steps=3"], "divisible by algorithm.grad_accum_steps"),
    (["rollout.generation_batch_size=12"], "generation_batch_size .* divisible by the group size"),
    (["model.use_reference=false"], "needs the reference model"),
    (["data.rewards=[{name: arithmetic}]", "data.accuracy_reward=math"], "not one of data.rewards"),
    (["data.rewards=[]"], "data.rewards: give at least one reward function"),
    (["data.task=arithmetic", "data.source=my.jsonl"],
     "data.task=arithmetic and data.source=my.jsonl: give one \\(data.task=null to train on the dataset\\)"),
    (["data.source=a.jsonl", "data.eval_source=b.jsonl", "data.eval_fraction=0.1"],
     "data.eval_source and data.eval_fraction both choose the held-out set"),
    (["data.source=a.jsonl", "data.eval_split=test", "data.eval_fraction=0.1"],
     "data.eval_fraction and data.eval_split both choose"),
    (["data.source=a.jsonl", "data.eval_fraction=1.5"], r"data.eval_fraction must be in \(0, 1\) or null"),
    (["data.eval_source=b.jsonl"], "data.eval_source is for a data.source run"),
    (["data.reward_timeout=-1"], "data.reward_timeout must be >= 0"),
    (["rollout.top_p=0"], "top_p"),
])
def test_validation(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


def test_presets():
    assert {"tiny-arithmetic", "tiny-random"} <= set(C.list_presets())
    cfg = load_config(preset="tiny-arithmetic", overrides=["algorithm.name=grpo"])
    assert cfg.model.name_or_path == "warmstart:weak" and cfg.algorithm.name == "grpo"
    with pytest.raises(ConfigError, match="unknown preset 'tiny-arithmetc'.*did you mean 'tiny-arithmetic'"):
        load_config(preset="tiny-arithmetc")


def test_diff_configs_ignores_what_may_change_on_resume():
    a = C.to_dict(load_config())
    b = C.to_dict(load_config(overrides=["total_steps=500", "output_dir=x", "logging.wandb=true", "seed=1"]))
    assert C.diff_configs(a, b) == ["seed"]


def test_cli_print_config_and_help(capsys):
    from spro.cli import main

    assert main(["train", "--preset", "tiny-random", "--print-config", "algorithm.name=rloo"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["algorithm"]["name"] == "rloo"
    assert C.config_from_dict(printed) == load_config(preset="tiny-random", overrides=["algorithm.name=rloo"])
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--print-config" in text and "accelerate launch" in text
    for algo in ("spro", "grpo", "dr_grpo", "rloo", "prime"):  # every algorithm's section, with help text
        assert f"\nalgorithm.{algo}: " in text
    assert "algorithm.spro.beta = 0.05\n      Weight of the self-guided process reward" in text
    assert "algorithm.prime.prm_update = 'before'" in text
    assert main(["train", "--print-config", "optim.lr=abc"]) == 2
    assert "optim.lr: expected a number" in capsys.readouterr().err


def test_options_of_several_algorithms_in_one_config():
    cfg = load_config(overrides=["algorithm.name=grpo", "algorithm.spro.beta=0.02", "algorithm.prime.filter=false"])
    assert cfg.algorithm.options == cfg.algorithm.grpo and cfg.algorithm.spro.beta == 0.02
    assert cfg.algorithm.prime.filter is False and cfg.algorithm.rloo is not None
    dumped = C.to_dict(cfg)["algorithm"]
    assert dumped["spro"]["beta"] == 0.02 and dumped["grpo"]["outcome_scale"] == "group" and "rloo" not in dumped
    assert C.config_from_dict(C.to_dict(cfg)) == cfg


def test_keys_of_0_1_still_work_with_a_warning_naming_the_new_key(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"algorithm": {"name": "prime", "beta": 0.2, "prm_lr": 1e-4, "spro": {"eps": 0.5}}}))
    with pytest.warns(FutureWarning, match="algorithm.prm_lr is now algorithm.prime.prm_lr"):
        cfg = load_config(path, ["algorithm.prime_filter=false"])
    assert cfg.algorithm.spro.beta == 0.2 and cfg.algorithm.spro.eps == 0.5 and cfg.algorithm.prime.prm_lr == 1e-4
    assert cfg.algorithm.prime.filter is False
    with pytest.warns(FutureWarning, match="algorithm.outcome_scale is now algorithm.spro.outcome_scale and "
                                           "algorithm.grpo.outcome_scale"):
        cfg = load_config(overrides=["algorithm.spro.beta=0.3", "algorithm.outcome_scale=none"])
    assert cfg.algorithm.grpo.outcome_scale == "none" == cfg.algorithm.spro.outcome_scale
    # an override given the old way after the new way wins, as overrides do
    with pytest.warns(FutureWarning):
        assert load_config(overrides=["algorithm.spro.beta=0.3", "algorithm.beta=0.4"]).algorithm.spro.beta == 0.4

"""TrainConfig: YAML + presets + typed overrides, suggestions for unknown keys, validation."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

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
    assert cfg.seed == 3 and cfg.algorithm.name == "grpo" and cfg.algorithm.sections["spro"].beta == 0.1
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
    ("data.rewards=[{name: math, wieght: 1}]", r"data.rewards: unknown key 'wieght' \(its keys: name, weight\)"),
    ("data=5", "data: expected a mapping of DataConfig's keys, got 5"),
    ("model.lora.target_modules=5", "model.lora.target_modules: expected a string or a list, got 5"),
    ("data.prompt_template=${nope}", "data.prompt_template: Interpolation key 'nope' not found"),
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
    sections = cfg.algorithm.sections
    assert cfg.algorithm.options == sections["grpo"] and sections["spro"].beta == 0.02
    assert sections["prime"].filter is False and set(sections) == {"grpo", "spro", "prime"}
    # no algorithm's defaults are reachable through the config other than the selected one's (no silent fallback)
    for name in ("spro", "rloo"):
        with pytest.raises(AttributeError):
            getattr(cfg.algorithm, name)
    dumped = C.to_dict(cfg)["algorithm"]
    assert dumped["spro"]["beta"] == 0.02 and dumped["grpo"]["outcome_scale"] == "group" and "rloo" not in dumped
    assert C.config_from_dict(C.to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, suggestion", [
    ("algorithm.beta=0.2", "'algorithm.spro.beta'? (TRL's beta, the KL coefficient, is 'algorithm.kl_coef')"),
    ("algorithm.prm_lr=1e-4", "'algorithm.prime.prm_lr'?"),
    ("algorithm.prime_filter=false", "'algorithm.prime.filter'?"),
    ("algorithm.outcome_scale=none", "'algorithm.spro.outcome_scale' or 'algorithm.grpo.outcome_scale'?"),
])
def test_flat_algorithm_keys_of_0_1_are_errors_naming_the_new_key(override, suggestion):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["algorithm.name=prime", override])
    assert str(e.value) == f"unknown config key '{override.split('=')[0]}'; did you mean {suggestion}"


@pytest.mark.parametrize("override, key", [
    ("beta=0.04", "algorithm.kl_coef"), ("num_iterations=2", "algorithm.ppo_epochs"),
    ("num_generations=4", "rollout.num_generations"), ("learning_rate=1e-6", "optim.lr"),
    ("max_completion_length=64", "rollout.max_new_tokens"), ("temperature=0.7", "rollout.temperature"),
    ("epsilon=0.2", "algorithm.clip_eps_low"), ("epsilon_high=0.28", "algorithm.clip_eps_high"),
    ("loss_type=dapo", "algorithm.loss_agg"), ("scale_rewards=none", "algorithm.grpo.outcome_scale"),
    ("max_steps=10", "total_steps"), ("gradient_accumulation_steps=2", "algorithm.grad_accum_steps"),
])
def test_did_you_mean_knows_trl_names(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{override.split('=')[0]}'; did you mean '{key}'"):
        load_config(overrides=[override])


def test_trl_names_are_grpo_config_fields_and_their_keys_exist():
    trl = pytest.importorskip("trl")
    fields = {f.name for cls in (trl.GRPOConfig, trl.ModelConfig) for f in dataclasses.fields(cls)}
    assert set(C.TRL_NAMES) <= fields, set(C.TRL_NAMES) - fields
    keys = set(C.all_keys())
    assert set(C.TRL_NAMES.values()) <= keys, set(C.TRL_NAMES.values()) - keys


@pytest.mark.parametrize("override, match", [
    ("algorithm.mini_batch_size=-4", "algorithm.mini_batch_size must be >= 0, got -4"),
    ("optim.lr=.inf", "optim.lr must be a finite number, got inf"),
    ("optim.lr=.nan", "optim.lr must be a finite number, got nan"),
    ("rollout.temperature=.inf", "rollout.temperature must be a finite number, got inf"),
    ("rollout.temperature=0", "rollout.temperature must be > 0, got 0.0"),
    ("optim.max_grad_norm=-1", "optim.max_grad_norm must be >= 0, got -1.0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay must be >= 0"),
    ("seed=-1", r"seed must be in \[0, 4294967\), got -1"),
    ("seed=5000000", r"seed must be in \[0, 4294967\)"),
    ("optim.adam_beta1=1.5", r"optim.adam_beta1 must be in \[0, 1\), got 1.5"),
    ("optim.adam_beta2=-0.1", r"optim.adam_beta2 must be in \[0, 1\)"),
    ("optim.adam_eps=-1e-8", "optim.adam_eps must be >= 0"),
    ("optim.scheduler=cosin", "optim.scheduler: 'cosin' is not one of .*did you mean 'cosine'"),
    ("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0"),
    ("data.eval_size=-5", "data.eval_size must be >= 0, got -5"),
    ("data.train_size=0", "data.train_size must be >= 1 or null"),
    ("data.rewards=[{name: arithmetic, weight: .inf}]", r"data.rewards\[0\].weight must be a finite number"),
    ("rollout.top_k=-1", "rollout.top_k must be >= 0"),
    ("rollout.max_new_tokens=0", "rollout.max_new_tokens must be >= 1"),
    ("rollout.eval_batch_size=0", "rollout.eval_batch_size must be >= 1"),
    ("total_steps=0", "total_steps must be >= 1, got 0"),
    ("save_every=-1", "save_every must be >= 0"),
    ("eval_every=-2", "eval_every must be >= -1"),
    ("keep_last=0", "keep_last must be >= 1"),
    ("model.tiny_seed=-3", "model.tiny_seed must be in"),
    ("logging.log_completions=-1", "logging.log_completions must be >= 0"),
    ("algorithm.entropy_coef=-.inf", "algorithm.entropy_coef must be a finite number"),
    ("algorithm.spro.beta=.inf", "algorithm.spro.beta must be a finite number"),
])
def test_numeric_ranges_are_checked_at_load_naming_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_scheduler_choices_are_transformers_schedulers():
    from transformers.trainer_utils import SchedulerType

    assert set(C.SCHEDULERS) <= {s.value for s in SchedulerType}


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("output_dir: runs/caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not a UTF-8 text file .*save it as UTF-8"):
        load_config(path)


def test_one_version_and_no_compatibility_layer():
    import importlib
    import pathlib
    import tomllib

    import spro

    pyproject = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == spro.__version__
    assert "filterwarnings" not in pyproject["tool"]["pytest"]["ini_options"]  # dependencies' warnings stay visible
    for old in ("spro.advantages", "spro.prm", "spro.checkpoint", "spro.algorithms.compat"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


def test_dotted_keys_in_a_file_and_interpolation(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algorithm.name: grpo\noutput_dir: runs/${algorithm.name}-${seed}\nseed: 4\n")
    cfg = load_config(path, ["data.rewards=[arithmetic, {name: format, weight: 0.5}]"])
    assert cfg.algorithm.name == "grpo" and cfg.output_dir == "runs/grpo-4"
    assert cfg.data.rewards == [C.RewardSpec("arithmetic", 1.0), C.RewardSpec("format", 0.5)]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_example_config_loads(path):
    """The example configs (spro compare --config examples/...) name only keys that exist, with valid values."""
    cfg = load_config(path)
    assert cfg.model.name_or_path and cfg.total_steps > 0

"""What a config trains and evaluates on, and its default reward (spro.data.loader)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from spro.config import ConfigError, load_config
from spro.data import default_reward, load_prompt_dataset
from spro.data.loader import load_datasets, reward_specs, task_name

FIX = Path(__file__).parents[1] / "fixtures"


def _cfg(*overrides):
    return load_config(overrides=list(overrides))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _gsm8k(path, n=10, start=0):
    return _write(path, [{"question": f"{i}+1?", "answer": f"#### {i + 1}"} for i in range(start, start + n)])


def test_a_data_source_is_what_is_trained_on(tmp_path):
    f = _gsm8k(tmp_path / "my.jsonl")
    cfg = _cfg(f"data.source={f}", "data.schema=gsm8k", "eval_every=-1")
    assert task_name(cfg.data) is None
    train, evals = load_datasets(cfg)
    assert list(train["prompt"]) == [f"{i}+1?" for i in range(10)] and evals is None
    # neither a task nor a source: the built-in arithmetic task (as before)
    assert task_name(_cfg().data) == "arithmetic" and task_name(_cfg("data.task=arithmetic").data) == "arithmetic"


def test_default_reward_from_what_is_trained_on(tmp_path):
    assert default_reward(task="arithmetic") == "arithmetic"
    for fixture, reward in (("gsm8k.jsonl", "math"), ("math.jsonl", "math"), ("eurus.jsonl", "eurus")):
        assert default_reward(source=str(FIX / fixture), dataset=load_prompt_dataset(FIX / fixture)) == reward
    assert default_reward(source="reasoning_gym:leg_counting") == "reasoning_gym"
    assert default_reward(load_prompt_dataset(FIX / "gsm8k.jsonl")) == "math"  # the call of spro 0.1
    with pytest.raises(ConfigError, match=r"plain.csv: the plain schema implies no reward function; name one with "
                                          r"data.rewards"):
        default_reward(source=str(FIX / "plain.csv"), dataset=load_prompt_dataset(FIX / "plain.csv"))
    # the config's view: null = the default, with a note saying why; an explicit list as given
    f = _gsm8k(tmp_path / "g.jsonl")
    cfg = _cfg(f"data.source={f}", "eval_every=-1")
    specs, note = reward_specs(cfg.data, load_datasets(cfg)[0])
    assert specs == [("math", 1.0)] and "what gsm8k data implies" in note
    cfg = _cfg(f"data.source={f}", "eval_every=-1", "data.rewards=[{name: format, weight: 0.5}]")
    assert reward_specs(cfg.data, load_datasets(cfg)[0]) == ([("format", 0.5)], "reward 0.5 x format (data.rewards)")
    assert reward_specs(_cfg().data, None)[0] == [("arithmetic", 1.0)]


def test_a_single_file_without_a_held_out_set_is_an_error(tmp_path):
    f = _gsm8k(tmp_path / "my.jsonl")
    with pytest.raises(ConfigError, match=r"no held-out set.*data.eval_source=FILE.*data.eval_split=SPLIT.*"
                                          r"data.eval_fraction=0.1.*eval_every=-1"):
        load_datasets(_cfg(f"data.source={f}"))
    with pytest.raises(ConfigError, match=r"data.eval_split=validation: data.source=.*my.jsonl has no splits"):
        load_datasets(_cfg(f"data.source={f}", "data.eval_split=validation"))
    with pytest.raises(ConfigError, match="data.eval_split=train is the training split"):
        load_datasets(_cfg(f"data.source={f}", "data.eval_split=train"))


def test_eval_fraction_is_seeded_and_never_trained_on(tmp_path):
    f = _gsm8k(tmp_path / "my.jsonl", n=20)
    train, evals = load_datasets(_cfg(f"data.source={f}", "data.eval_fraction=0.25", "seed=3"))
    assert len(evals) == 5 and len(train) == 15
    assert not set(train["prompt"]) & set(evals["prompt"])
    assert sorted([*train["prompt"], *evals["prompt"]]) == sorted(f"{i}+1?" for i in range(20))
    again, evals_again = load_datasets(_cfg(f"data.source={f}", "data.eval_fraction=0.25", "seed=3"))
    assert list(again["prompt"]) == list(train["prompt"]) and list(evals_again["prompt"]) == list(evals["prompt"])
    other = load_datasets(_cfg(f"data.source={f}", "data.eval_fraction=0.25", "seed=4"))[1]
    assert list(other["prompt"]) != list(evals["prompt"])
    # carved out also when the run never evaluates, so the training rows do not depend on eval_every
    assert list(load_datasets(_cfg(f"data.source={f}", "data.eval_fraction=0.25", "seed=3", "eval_every=-1"))[0][
        "prompt"]) == list(train["prompt"])
    with pytest.raises(ConfigError, match="holds out 0"):
        load_datasets(_cfg(f"data.source={f}", "data.eval_fraction=0.01"))
    with pytest.warns(UserWarning, match="holds out 5 rows .* the first data.eval_size=3 of them: the other 2 are "
                                         "neither trained on nor evaluated"):
        assert len(load_datasets(_cfg(f"data.source={f}", "data.eval_fraction=0.25", "data.eval_size=3"))[1]) == 3


def test_eval_split_of_a_source_with_splits(tmp_path):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"question": ["1+1?"], "answer": ["#### 2"]}),
                               "test": datasets.Dataset.from_dict({"question": ["2+2?"], "answer": ["#### 4"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    train, evals = load_datasets(_cfg(f"data.source={tmp_path / 'dd'}", "data.eval_split=test"))
    assert list(train["prompt"]) == ["1+1?"] and list(evals["prompt"]) == ["2+2?"]
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_datasets(_cfg(f"data.source={tmp_path / 'dd'}", "data.eval_split=validation"))


def test_column_map_goes_from_the_column_spro_needs_to_yours_and_the_eval_source_has_its_own(tmp_path):
    train_f = _write(tmp_path / "train.jsonl", [{"instruction": f"{i}+1=", "output": str(i + 1)} for i in range(4)])
    eval_f = _write(tmp_path / "eval.jsonl", [{"q": "9+1=", "gold": "10"}])
    cfg = _cfg(f"data.source={train_f}", "data.column_map={prompt: instruction, answer: output}",
               f"data.eval_source={eval_f}", "data.eval_column_map={prompt: q, answer: gold}")
    help_text = type(cfg.data).__dataclass_fields__["column_map"].metadata["help"]
    assert "{'prompt': YOUR_PROMPT_COLUMN, 'answer': YOUR_ANSWER_COLUMN}" in help_text  # the direction used above
    train, evals = load_datasets(cfg)
    assert train["prompt"][0] == "0+1=" and train["answer"][0] == "1"
    assert list(evals["prompt"]) == ["9+1="] and list(evals["answer"]) == ["10"]
    # without eval_column_map the eval source is read with data.column_map
    same = _write(tmp_path / "eval2.jsonl", [{"instruction": "5+1=", "output": "6"}])
    cfg = _cfg(f"data.source={train_f}", "data.column_map={prompt: instruction, answer: output}",
               f"data.eval_source={same}")
    assert list(load_datasets(cfg)[1]["answer"]) == ["6"]

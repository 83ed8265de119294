"""reasoning-gym tasks as data (offline): disjoint train and eval sets, the task's own scorer as reward."""

from __future__ import annotations

import pytest
from helpers import read_jsonl, save_small_model, small_overrides

from spro.config import load_config
from spro.data.loader import load_datasets
from spro.rewards import get_reward

SMALL = {"data.task": "null", "data.train_size": "null", "data.reasoning_gym.size": 150, "data.eval_size": 30,
         "data.reasoning_gym.config": "{min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}"}


def _config(tmp_path, task, **extra):
    over = {**SMALL, "data.source": f"reasoning_gym:{task}", "data.rewards": "[reasoning_gym]", **extra}
    return load_config(overrides=small_overrides(tmp_path / "model", tmp_path / "run", **over))


@pytest.mark.parametrize("task", ["chain_sum", "basic_arithmetic"])
def test_disjoint_splits_and_the_tasks_own_scorer(tmp_path, task):
    train, evals = load_datasets(_config(tmp_path, task))
    assert len(train) == 150 and 0 < len(evals) <= 30
    assert not set(train["question"]) & set(evals["question"])  # 1-digit sums repeat: the overlap was removed
    assert len(set(evals["question"])) == len(evals)
    row = train[0]
    assert row["data_source"] == f"reasoning_gym/{task}"
    system, user = row["prompt"]
    assert system["role"] == "system" and "<answer>" in system["content"] and user["content"] == row["question"]

    reward = get_reward("reasoning_gym")
    rows = evals.select(range(3))
    right = [f"Thinking... <answer>{a}</answer>" for a in rows["answer"]]
    wrong = [f"<answer>{int(float(a)) + 1}</answer>" for a in rows["answer"]]
    untagged = list(rows["answer"])  # the right number, but not where the prompt asked for it
    cols = {"reasoning_gym": rows["reasoning_gym"]}
    assert reward(rows["prompt"], right, **cols) == [1.0, 1.0, 1.0]
    assert reward(rows["prompt"], wrong, **cols) == [0.0, 0.0, 0.0]
    assert reward(rows["prompt"], untagged, **cols) == [0.0, 0.0, 0.0]
    assert reward(["p"], ["<answer>1</answer>"], reasoning_gym=[None]) == [None]


def test_plain_prompts_template_and_train_size(tmp_path):
    cfg = _config(tmp_path, "chain_sum", **{"data.reasoning_gym.chat": False, "data.train_size": 40,
                                            "data.prompt_template": "'Q: {prompt}'"})
    train, _ = load_datasets(cfg)
    assert len(train) == 40
    assert train[0]["prompt"] == f"Q: {train[0]['question']}\n\nGive the final answer inside <answer></answer> tags."
    again, _ = load_datasets(cfg)
    assert again["question"] == train["question"]  # seeded
    other, _ = load_datasets(_config(tmp_path, "chain_sum", **{"data.reasoning_gym.seed": 5}))
    assert other["question"][:40] != train["question"]


def test_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="no task 'chain_summ'; did you mean 'chain_sum'"):
        load_datasets(_config(tmp_path, "chain_summ"))
    with pytest.raises(ValueError, match=r"data.reasoning_gym.config \{'nope': 1\}: not a valid config of"):
        load_datasets(_config(tmp_path, "chain_sum", **{"data.reasoning_gym.config": "{nope: 1}"}))
    with pytest.raises(ValueError, match="data.reasoning_gym.config.seed: set data.reasoning_gym.seed instead"):
        load_datasets(_config(tmp_path, "chain_sum", **{"data.reasoning_gym.config": "{seed: 1}"}))
    with pytest.raises(ValueError, match="needs rows from data.source=reasoning_gym"):
        get_reward("reasoning_gym")(["p"], ["c"], answer=["1"])


def test_training_on_a_reasoning_gym_task(tmp_path):
    save_small_model(tmp_path / "model", max_position_embeddings=512)
    cfg = _config(tmp_path, "chain_sum", total_steps=2, **{"data.reasoning_gym.chat": False})
    from spro.trainer import train

    out = train(cfg)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert len(metrics) == 2 and all(m["reward/reasoning_gym/mean"] is not None for m in metrics)
    (ev,) = read_jsonl(out / "eval.jsonl")
    _, evals = load_datasets(cfg)
    assert ev["eval/n"] == len(evals) and ev["eval/accuracy"] is not None


def test_eval_command_on_a_reasoning_gym_task(model_dir, tmp_path):
    import json

    from spro.cli import main

    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(model_dir), "--data", "reasoning_gym:chain_sum", "--n", "3",
                 "--task-knob", "max_terms=2", "--max-new-tokens", "4",
                 "--no-progress", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 3 and result["reward"] == "reasoning_gym" and result["pass@1"] == 0.0


def test_sft_warm_start_on_a_reasoning_gym_task_uses_the_training_questions_of_spro_train(tmp_path):
    """`spro sft --data reasoning_gym:NAME`: the questions spro train builds at data.reasoning_gym's defaults,
    the answers in the prompt's tags as targets, the held-out questions its evaluation ones."""
    import dataclasses

    from spro.trainer.sft import SFTConfig, sft, sft_data

    knobs = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}
    cfg = SFTConfig(data="reasoning_gym:chain_sum", task_kwargs=knobs, eval_n=20, steps=2, batch_size=4,
                    max_new_tokens=4, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                    max_position_embeddings=640)
    data = sft_data(cfg)
    train, evals = load_datasets(_config(tmp_path, "chain_sum", **{
        "data.reasoning_gym.size": 1000, "data.eval_size": 20,
        "data.reasoning_gym.config": "{min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 2}"}))
    assert data.train["question"] == train["question"] and data.validation["question"] == evals["question"]
    assert data.targets[:2] == [f"<answer>{a}</answer>" for a in train["answer"][:2]]
    assert data.reward(data.train["prompt"][:5], data.targets[:5], reasoning_gym=data.train["reasoning_gym"][:5]) == [1.0] * 5
    assert data.knobs == knobs
    assert len(sft_data(dataclasses.replace(cfg, train_size=50)).train) == 50
    result = sft(cfg, tmp_path / "out", progress=False)
    (val,) = result.validation
    assert val["n"] == 20 and 0.0 <= val["accuracy"] <= 1.0
    # spro train from that warm start: its evaluation questions must not be the warm start's training ones
    from spro.config import ConfigError
    from spro.data.reasoning_gym import check_unseen_by_warm_start

    check_unseen_by_warm_start(tmp_path / "out", evals)  # data.reasoning_gym at its defaults: unseen
    _, smaller = load_datasets(_config(tmp_path, "chain_sum", **{
        "data.reasoning_gym.size": 500, "data.eval_size": 20,
        "data.reasoning_gym.config": "{min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 2}"}))
    with pytest.raises(ConfigError, match=r"of the 20 evaluation questions are training questions of the warm start"):
        check_unseen_by_warm_start(tmp_path / "out", smaller)  # items 500-519 at seed 0: the warm start saw them
    with pytest.raises(ValueError, match="makes its own held-out questions"):
        sft_data(dataclasses.replace(cfg, eval_data="dev.jsonl"))
    (tmp_path / "d.jsonl").write_text('{"prompt": "1+1=", "answer": "2", "solution": "2"}\n' * 3)
    with pytest.raises(ValueError, match=r"task_kwargs \{'max_terms': 2\}: knobs of a built-in task or of a "
                                         r"reasoning_gym:NAME source, not of the dataset"):
        sft_data(SFTConfig(data=str(tmp_path / "d.jsonl"), task_kwargs={"max_terms": 2}, reward="math"))

"""`spro sft --data FILE`: supervised warm start on any dataset with a solution column, through the code path
of the built-in tasks."""

from __future__ import annotations

import dataclasses

import json

import pytest

from spro.trainer.sft import FINETUNE, SFTConfig, encode_example, sft, sft_data

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=256)
TASK = {"num_operands": (2, 3), "value_range": (0, 9), "train_size": 120, "validation_size": 8, "test_size": 8}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_dataset_file_trains_exactly_like_the_same_rows_of_a_built_in_task(tmp_path):
    """The task's rows exported to jsonl give the same examples, losses and held-out accuracy."""
    from spro.data.tasks import get_task

    task = get_task("arithmetic", **TASK)
    cols = ("prompt", "answer", "solution")
    train = _write_jsonl(tmp_path / "train.jsonl", [{c: r[c] for c in cols} for r in task.split("train")])
    dev = _write_jsonl(tmp_path / "dev.jsonl", [{c: r[c] for c in cols} for r in task.split("validation")])
    common = dict(steps=12, batch_size=16, lr=1e-2, warmup_steps=2, eval_every=6, eval_n=8, max_new_tokens=16, **TINY)
    built_in = sft(SFTConfig(task_kwargs=TASK, **common), None, progress=False)
    from_file = sft(SFTConfig(data=str(train), eval_data=str(dev), reward="arithmetic", **common), None,
                    progress=False)
    assert from_file.losses == built_in.losses
    assert [(v["accuracy"], v["n"]) for v in from_file.validation] == [(v["accuracy"], v["n"]) for v in built_in.validation]


def test_chat_prompts_mapped_columns_completion_only_and_held_out_accuracy(tmp_path, char_tokenizer):
    rows = [{"messages": [{"role": "user", "content": f"{a}+{b}="}], "gold": str(a + b), "response": f"#### {a + b}"}
            for a in range(10) for b in range(10)]
    path = _write_jsonl(tmp_path / "chat.jsonl", rows)
    cfg = SFTConfig(data=str(path), column_map={"prompt": "messages", "answer": "gold", "solution": "response"},
                    steps=150, batch_size=32, lr=1e-2, warmup_steps=10, eval_n=10, max_new_tokens=8, **TINY)
    with pytest.raises(ValueError, match="the plain schema implies no reward function; name one with --reward"):
        sft_data(cfg)  # plain rows: no reward is implied, as for spro train (spro.data.default_reward)
    cfg = dataclasses.replace(cfg, reward="math")
    data = sft_data(cfg)
    assert len(data.train) == 90 and len(data.validation) == 10  # 10% held out
    assert not set(map(str, data.train["prompt"])) & set(map(str, data.validation["prompt"]))
    assert data.reward.__name__ == "math_reward"
    p, c = encode_example(char_tokenizer, data.train[0]["prompt"], data.targets[0])
    rendered = char_tokenizer.apply_chat_template(data.train[0]["prompt"], tokenize=False, add_generation_prompt=True)
    assert char_tokenizer.decode(p) == rendered and rendered.endswith("assistant: ")  # the chat template, unsupervised
    assert c[-1] == char_tokenizer.eos_token_id and char_tokenizer.decode(c[:-1]) == data.targets[0]
    result = sft(cfg, tmp_path / "out", progress=False)
    assert result.losses[-1] < 0.3 * result.losses[0]
    (val,) = result.validation
    from spro.models.loading import load_model_and_tokenizer
    from spro.rewards.math import math_reward
    from spro.rollout import generate_completions

    model, tok = load_model_and_tokenizer(tmp_path / "out")  # the held-out accuracy is the math reward's
    texts, _, _ = generate_completions(model, tok, list(data.validation["prompt"]), max_new_tokens=8)
    greedy = [t[0] for t in texts]
    assert all(g.startswith("#### ") for g in greedy)  # learnt the format of the solutions
    scores = math_reward(data.validation["prompt"], greedy, answer=data.validation["answer"])
    assert (val["n"], val["accuracy"]) == (10, pytest.approx(sum(scores) / 10))
    meta = json.loads((tmp_path / "out" / "sft_config.json").read_text())
    assert meta["data"] == str(path) and meta["train_rows"] == 90


def test_gsm8k_solutions_get_their_answer_line_back(tmp_path):
    data = sft_data(SFTConfig(data="tests/fixtures/gsm8k.jsonl", eval_n=1))
    assert len(data.train) == 2 and len(data.validation) == 1  # the fixture's 3 good rows (2 are bad on purpose)
    for target, answer in zip(data.targets, data.train["answer"]):
        assert target.endswith(f"\n#### {answer}") and "<<" in target  # the worked solution, then the answer
    from spro.rewards.math import math_reward

    assert math_reward(data.train["prompt"], data.targets, answer=data.train["answer"]) == [1.0, 1.0]


def test_errors_name_the_file_and_columns(tmp_path):
    path = _write_jsonl(tmp_path / "no_solution.jsonl", [{"prompt": "1+1=", "answer": "2"}] * 3)
    with pytest.raises(ValueError, match=r"no_solution.jsonl: no 'solution' column .*columns: prompt, answer"):
        sft_data(SFTConfig(data=str(path)))
    path = _write_jsonl(tmp_path / "empty.jsonl", [{"prompt": "1+1=", "answer": "2", "solution": s} for s in ("2", " ")])
    with pytest.raises(ValueError, match=r"empty.jsonl: 1 row\(s\) with an empty 'solution' \(first: row 1"):
        sft_data(SFTConfig(data=str(path)))
    with pytest.raises(ValueError, match="eval_data needs data"):
        SFTConfig(eval_data="x.jsonl")


def test_cli_picks_the_finetune_settings_for_a_dataset_and_a_model(tmp_path, capsys):
    from helpers import save_small_model

    from spro.cli import main

    model_dir = save_small_model(tmp_path / "model", max_position_embeddings=512)
    out = tmp_path / "sft"
    assert main(["sft", "--data", "tests/fixtures/gsm8k.jsonl", "--model", str(model_dir), "--output", str(out),
                 "--steps", "2", "--max-new-tokens", "4", "--no-progress"]) == 0
    meta = json.loads((out / "sft_config.json").read_text())
    assert (meta["lr"], meta["batch_size"]) == (FINETUNE.lr, FINETUNE.batch_size) and meta["steps"] == 2
    assert "preset finetune" in " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    # a model of one's own on the built-in task: the same (before: the tiny model's lr 5e-3)
    out2 = tmp_path / "sft-task"
    assert main(["sft", "--task", "arithmetic", "--model", str(model_dir), "--output", str(out2), "--steps", "1",
                 "--eval-n", "2", "--max-new-tokens", "4", "--no-progress"]) == 0
    meta = json.loads((out2 / "sft_config.json").read_text())
    assert (meta["lr"], meta["batch_size"], meta["task"]) == (FINETUNE.lr, FINETUNE.batch_size, "arithmetic")
    assert main(["sft", "--data", "x.jsonl", "--task", "arithmetic", "--output", str(out)]) == 2
    assert main(["sft", "--data", "tests/fixtures/gsm8k.jsonl", "--column-map", "solution", "--output", str(out)]) == 2
    assert "--column-map 'solution': expected OURS=THEIRS" in capsys.readouterr().err

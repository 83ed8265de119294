"""`spro eval` and spro.experiments.evaluation on a tiny model."""

from __future__ import annotations

import json
import os

import pytest
import torch

from spro.experiments.evaluation import evaluate, generate_completions
from spro.models.loading import save_model_and_tokenizer
from spro.data.tasks import get_task
from spro.data.tasks.arithmetic import arithmetic_reward
from spro.models.tiny import build_char_tokenizer, build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KNOBS = {"num_operands": (2, 3), "value_range": (0, 9), "train_size": 200, "validation_size": 20, "test_size": 20}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
    path = tmp_path_factory.mktemp("evalmodel") / "m"
    save_model_and_tokenizer(model, tok, path)
    return model, tok, path


def test_batched_left_padded_greedy_matches_one_by_one(tiny):
    model, tok, _ = tiny
    prompts = ["Q:1+2=", "Q:10+20+3=", "Q:7-5+44-1="]  # different lengths -> padding in a batch
    batched, lens, trunc = generate_completions(model, tok, prompts, max_new_tokens=12, batch_size=8)
    for p, row, n in zip(prompts, batched, lens):
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        ids = out[0, enc["input_ids"].shape[1] :].tolist()
        if tok.eos_token_id in ids:
            ids = ids[: ids.index(tok.eos_token_id)]
        assert row[0] == tok.decode(ids, skip_special_tokens=True)
        assert n[0] == len(ids)
    assert tok.padding_side == "right"  # restored


def test_evaluate_metrics_match_a_manual_computation(tiny):
    model, tok, _ = tiny
    task = get_task("arithmetic", **KNOBS)
    ds = task.split("test", n=12)
    r = evaluate(model, tok, ds, task.reward, k=3, max_new_tokens=20, batch_size=5, seed=1,
                 step_checker=task.first_wrong_step)
    texts, lens, trunc = generate_completions(model, tok, ds["prompt"], max_new_tokens=20, batch_size=12)
    greedy = arithmetic_reward(ds["prompt"], [t[0] for t in texts], ds["answer"])
    assert r["n"] == 12 and r["k"] == 3
    assert r["pass@1"] == pytest.approx(sum(greedy) / 12)
    assert r["length_mean"] == pytest.approx(sum(l[0] for l in lens) / 12)
    assert r["truncated_frac"] == pytest.approx(sum(t[0] for t in trunc) / 12)
    assert 0.0 <= r["mean@3"] <= r["pass@3"] <= 1.0
    sc = r["step_checker"]
    assert sc["wrong_n"] + sc["right_n"] == 12
    assert sum(sc["positions"].values()) == round((sc["found_frac"] or 0) * sc["wrong_n"])
    # Sampling is seeded: same seed, same mean@k.
    r2 = evaluate(model, tok, ds, task.reward, k=3, max_new_tokens=20, batch_size=5, seed=1)
    assert r2["mean@3"] == r["mean@3"]


def test_evaluate_with_a_perfect_and_a_none_reward(tiny):
    import datasets

    model, tok, _ = tiny
    ds = datasets.Dataset.from_dict({"prompt": ["Q:1+2=", "Q:3+4=", "Q:5+6=", "Q:7+8="], "answer": ["3", "7", "11", "15"],
                                     "data_source": ["a", "a", "b", "b"]})

    def always_one(prompts, completions, **kw):
        return [1.0] * len(completions)

    def none_for_b(prompts, completions, data_source, **kw):
        return [None if s == "b" else 0.5 for s in data_source]

    r = evaluate(model, tok, ds, always_one, k=2, max_new_tokens=8)
    assert r["pass@1"] == 1.0 and r["mean@2"] == 1.0 and r["pass@2"] == 1.0
    assert set(r["by_source"]) == {"a", "b"} and r["by_source"]["a"]["n"] == 2
    r = evaluate(model, tok, ds, none_for_b, k=2, max_new_tokens=8)
    assert r["reward_none"] == 2 + 4  # 2 greedy + 2x2 sampled rows of source b
    assert r["pass@1"] == 0.5 and r["by_source"]["b"]["pass@1"] is None


def test_eval_cli_json_output(tiny, tmp_path):
    from spro.cli import main

    _, _, path = tiny
    out = tmp_path / "eval.json"
    knobs = [a for k, v in KNOBS.items() for a in ("--task-knob", f"{k}={json.dumps(v)}")]
    rc = main(["eval", "--model", str(path), "--task", "arithmetic", "--n", "6", "--k", "2", "--max-new-tokens", "16",
               "--out", str(out), "--no-progress", *knobs])
    assert rc == 0
    r = json.loads(out.read_text())
    for key in ("model", "task", "split", "n", "pass@1", "mean@2", "pass@2", "length_mean", "sampled_length_mean",
                "truncated_frac", "step_checker", "examples", "temperature", "top_p"):
        assert key in r, key
    assert r["n"] == 6 and r["split"] == "test" and r["knobs"]["value_range"] == [0, 9]


def test_eval_cli_errors(tiny, tmp_path, capsys):
    from spro.cli import main

    assert main(["eval", "--model", str(tmp_path / "nope"), "--n", "2", "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    _, _, path = tiny
    assert main(["eval", "--model", str(path), "--task", "arithmetc", "--no-progress"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_eval_cli_data_mode(tiny, tmp_path):
    pytest.importorskip("spro.data")
    from spro.cli import main

    _, _, path = tiny
    data = tmp_path / "rows.jsonl"
    rows = [{"prompt": f"Q:{i}+1=", "answer": str(i + 1), "data_source": "s1" if i % 2 else "s2"} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval.json"
    rc = main(["eval", "--model", str(path), "--data", str(data), "--reward", "arithmetic", "--k", "2",
               "--max-new-tokens", "8", "--out", str(out), "--no-progress"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["n"] == 6 and set(r["by_source"]) == {"s1", "s2"} and "mean@2" in r


def test_eval_cli_default_reward_is_the_one_training_uses(tiny, tmp_path, capsys):
    from spro.cli import main

    _, _, path = tiny
    gsm = tmp_path / "g.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(3)))
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(path), "--data", str(gsm), "--max-new-tokens", "4", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads(out.read_text())["reward"] == "math"
    assert main(["eval", "--model", str(path), "--task", "arithmetic", "--n", "2", "--max-new-tokens", "4", "--out",
                 str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["reward"] == "arithmetic"
    plain = tmp_path / "p.jsonl"
    plain.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
    assert main(["eval", "--model", str(path), "--data", str(plain), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # (rich wraps long lines)
    assert "the plain schema implies no reward function; name one with --reward NAME" in err

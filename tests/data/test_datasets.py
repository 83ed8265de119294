"""spro.data.load_prompt_dataset on hand-written fixtures in each format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import datasets
import pytest

from spro.data import get_load_report, load_prompt_dataset

FIX = Path(__file__).parents[1] / "fixtures"


def _load(*args, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = load_prompt_dataset(*args, **kw)
    return ds, [str(x.message) for x in w]


def test_eurus_schema_chat_prompts_ground_truth_and_source():
    ds, warns = _load(FIX / "eurus.jsonl")
    assert len(ds) == 4
    assert ds[0]["prompt"][-1] == {"role": "user", "content": "What is $\\frac{1}{2} + \\frac{1}{4}$?"}
    assert ds[0]["answer"] == "\\frac{3}{4}"
    assert ds["data_source"] == ["numina_olympiads", "numina_cn_k12", "taco", "apps"]
    assert json.loads(ds[2]["answer"])["outputs"] == ["3\n", "6\n", "0\n"]
    rep = get_load_report(ds)
    assert rep.schema == "eurus" and rep.rows_read == 5 and rep.rows_kept == 4
    assert rep.bad_rows == [(5, "empty or missing answer")]  # file line numbers, 1-based
    assert any("line 5" in w for w in warns)


def test_gsm8k_schema_final_answer_after_hashes():
    ds, warns = _load(FIX / "gsm8k.jsonl", schema="gsm8k")
    assert ds["answer"] == ["72", "10", "1500"]
    assert ds[0]["prompt"].startswith("Natalia sold clips")
    assert ds[0]["solution"].endswith("72 clips altogether in April and May.")
    assert set(ds["data_source"]) == {"gsm8k"}
    rep = get_load_report(ds)
    assert [i for i, _ in rep.bad_rows] == [4, 5]
    assert "####" in rep.bad_rows[0][1] and "prompt" in rep.bad_rows[1][1]


def test_math_schema_boxed_answer_with_nested_braces():
    ds, _ = _load(FIX / "math.jsonl")
    assert get_load_report(ds).schema == "math"
    assert ds["answer"] == ["4", "\\frac{3}{4}", "\\{0, 1\\}"]
    assert ds[0]["level"] == "Level 1"
    assert get_load_report(ds).bad_rows == [(4, "no \\boxed{} answer in the solution")]


def test_csv_and_prompt_template():
    ds, _ = _load(FIX / "plain.csv", prompt_template="{prompt}\nTopic: {topic}. Put the final answer in \\boxed{{}}.")
    assert ds["prompt"][0] == "Q:48+26+2=\nTopic: arith. Put the final answer in \\boxed{}."
    assert ds["answer"] == ["76", "42"]
    assert ds["data_source"] == ["plain", "plain"]


def test_template_applies_to_last_user_message_of_chat_prompts():
    ds, _ = _load(FIX / "eurus.jsonl", prompt_template="{prompt} Answer in \\boxed{{}}.")
    assert ds[0]["prompt"][0]["content"] == "Think step by step."  # system message untouched
    assert ds[0]["prompt"][1]["content"].endswith("? Answer in \\boxed{}.")


def test_parquet_and_save_to_disk_and_split(tmp_path):
    rows = {"question": ["What is 2+2?", "What is 3*3?"], "answer": ["2+2=4\n#### 4", "#### 9"]}
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "g.parquet"))
    ds, _ = _load(tmp_path / "g.parquet")
    assert ds["answer"] == ["4", "9"] and get_load_report(ds).schema == "gsm8k"
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                               "test": datasets.Dataset.from_dict({"question": ["1+1?"], "answer": ["#### 2"]})})
    dd.save_to_disk(str(tmp_path / "saved"))
    ds, _ = _load(tmp_path / "saved", split="test")
    assert ds["answer"] == ["2"]
    with pytest.raises(ValueError, match="no split 'validation'.*train, test"):
        load_prompt_dataset(tmp_path / "saved", split="validation")
    # the report records the split read: none for a single file, whatever was asked for
    assert get_load_report(ds).split == "test" and get_load_report(_load(tmp_path / "g.parquet", split="x")[0]).split is None
    with pytest.raises(ValueError, match="saved has the splits train, test; name the one to read"):
        load_prompt_dataset(tmp_path / "saved", split=None)


def test_column_map_with_nested_field_and_code_tests():
    ds, _ = _load(FIX / "code_asserts.jsonl", column_map={"answer": "tests"})
    assert json.loads(ds[0]["answer"]) == ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    assert ds[0]["tests"] == ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
    ds, _ = _load(FIX / "eurus.jsonl", column_map={"answer": "reward_model.ground_truth", "source": "data_source"})
    assert ds[1]["answer"] == "4" and ds[1]["source"] == "numina_cn_k12"


def test_non_utf8_and_bad_json_lines_are_reported_by_line_number(tmp_path):
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(
        b'{"prompt": "ok 1", "answer": "1"}\n'
        b'{"prompt": "caf\xe9 latin-1", "answer": "2"}\n'
        b'{"prompt": "broken json", \n'
        b'{"prompt": "ok 2", "answer": "3"}\n'
    )
    ds, warns = _load(p)
    assert ds["answer"] == ["1", "3"]
    rep = get_load_report(ds)
    assert [i for i, _ in rep.bad_rows] == [2, 3]
    assert "UTF-8" in rep.bad_rows[0][1] and "JSON" in rep.bad_rows[1][1]
    assert any("line 2" in w and "UTF-8" in w for w in warns)
    # keep: the row stays with answer None; error: the first bad row raises.
    ds, _ = _load(p, on_bad_row="keep")
    assert ds["answer"] == ["1", None, None, "3"]
    with pytest.raises(ValueError, match=r"mixed.jsonl: line 2: not valid UTF-8"):
        load_prompt_dataset(p, on_bad_row="error")


def test_non_utf8_csv_row(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"prompt,answer\nfine,1\nna\xefve,2\n")
    ds, _ = _load(p)
    assert ds["answer"] == ["1"]
    assert get_load_report(ds).bad_rows[0][0] == 3  # the header is line 1


def test_clear_errors_for_missing_file_and_columns(tmp_path):
    with pytest.raises(ValueError, match="dataset file not found: .*nope.jsonl"):
        load_prompt_dataset(tmp_path / "nope.jsonl")
    p = tmp_path / "odd.jsonl"
    p.write_text('{"text": "a", "label": 1}\n')
    with pytest.raises(ValueError, match=r"odd.jsonl: cannot tell the schema from the columns \['label', 'text'\]"):
        load_prompt_dataset(p)
    with pytest.raises(ValueError, match=r"column\(s\) \['instruction'\] from column_map not found; columns found: \['label', 'text'\]"):
        load_prompt_dataset(p, column_map={"prompt": "instruction", "answer": "label"})
    with pytest.raises(ValueError, match=r"schema 'math' needs column\(s\) \['problem'"):
        load_prompt_dataset(p, schema="math")
    with pytest.raises(ValueError, match="unknown schema"):
        load_prompt_dataset(p, schema="mmlu")


def test_loaded_rows_feed_the_rewards():
    from spro.rewards import get_reward

    ds, _ = _load(FIX / "eurus.jsonl")
    completions = ["So the sum is \\boxed{0.75}.", "x = 4, so \\boxed{4}",
                   "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
                   "```python\ndef square(n):\n    return n * n\n```"]
    r = get_reward("eurus")(ds["prompt"], completions, answer=ds["answer"], data_source=ds["data_source"])
    assert r == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_utf8_bom_at_the_start_keeps_the_first_row(tmp_path, suffix):
    """Files saved on Windows start with a byte-order mark; the first row is read, not reported as bad."""
    p = tmp_path / f"bom{suffix}"
    if suffix == ".csv":
        text = "prompt,answer\nfirst,1\nsecond,2\n"
    elif suffix == ".json":
        text = json.dumps([{"prompt": "first", "answer": "1"}, {"prompt": "second", "answer": "2"}])
    else:
        text = '{"prompt": "first", "answer": "1"}\n{"prompt": "second", "answer": "2"}\n'
    p.write_bytes(b"\xef\xbb\xbf" + text.encode())
    ds, warns = _load(p)
    assert ds["answer"] == ["1", "2"] and ds["prompt"] == ["first", "second"]
    assert get_load_report(ds).bad_rows == [] and not warns


def test_bad_rows_are_named_by_file_line_counting_blank_lines_and_multiline_csv_records(tmp_path):
    p = tmp_path / "gaps.jsonl"
    p.write_text('{"prompt": "a", "answer": "1"}\n\n\n{"prompt": "b"}\n')
    with pytest.raises(ValueError, match=r"gaps.jsonl: line 4: "):
        load_prompt_dataset(p, on_bad_row="error")
    c = tmp_path / "multi.csv"
    c.write_text('prompt,answer\n"two\nlines",1\nno answer,\n')
    with pytest.raises(ValueError, match=r"multi.csv: line 4: "):
        load_prompt_dataset(c, on_bad_row="error")
    j = tmp_path / "array.json"
    j.write_text(json.dumps([{"prompt": "a", "answer": "1"}, {"prompt": "b"}]))
    with pytest.raises(ValueError, match=r"array.json: row 2: "):
        load_prompt_dataset(j, on_bad_row="error")

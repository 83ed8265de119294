"""docs/trl-to-spro.md names every field GRPOConfig declares, and every spro key it names exists;
docs/python-api.md's example is valid Python."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_every_grpo_config_field_is_in_the_table_and_every_key_exists():
    trl = pytest.importorskip("trl")
    import transformers

    from spro.config import all_keys

    text = (ROOT / "docs" / "trl-to-spro.md").read_text()
    assert f"TRL {trl.__version__}" in text, "the table names the TRL version it was written for"
    inherited = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    own = [f.name for f in dataclasses.fields(trl.GRPOConfig) if f.name not in inherited]
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| (.*?) \|", text, re.M))
    assert [n for n in own if n not in rows] == []
    keys = set(all_keys())
    named = set(re.findall(r"`((?:model|data|rollout|algorithm|optim|logging)\.[a-z0-9_.]+)", text))
    assert named and sorted(k for k in named if k not in keys) == []
    assert "algorithm.kl_coef" in rows["beta"] and "algorithm.ppo_epochs" in rows["num_iterations"]


def test_python_api_example_parses():
    text = (ROOT / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    ast.parse(blocks[0])

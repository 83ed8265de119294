"""The README's "Your model and data" command runs as written, in a copy of examples/own_data."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

from helpers import read_jsonl

ROOT = Path(__file__).parents[1]


def _readme_command() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\ncd examples/own_data\n(spro train .*?)\n```", text, re.S)
    assert block, "README: the own-data command block is missing"
    return shlex.split(block.group(1).replace("\\\n", " "))


def test_readme_own_data_command(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "own_data"
    shutil.copytree(ROOT / "examples" / "own_data", folder)
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(folder))])
    args = _readme_command()
    assert args[:2] == ["spro", "train"]
    from spro.cli import main

    try:
        assert main(args[1:] + ["logging.progress_bar=false", "logging.tensorboard=false"]) == 0
    finally:
        sys.modules.pop("my_reward", None)
    err = capsys.readouterr().err
    said = re.search(r"spro: data problems.jsonl \(32 prompts; 8 held out by data.eval_fraction=0.2\); reward 1 x "
                     r"my_reward:exact_match \(data.rewards\); accuracy by my_reward:exact_match \(data.accuracy_reward\)",
                     err)
    assert said and " ".join(said.group(0).split()) in " ".join((ROOT / "README.md").read_text().split())
    run = folder / "runs" / "mine"
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]
    (ev,) = read_jsonl(run / "eval.jsonl")
    assert ev["eval/n"] == 8 and ev["eval/accuracy"] is not None

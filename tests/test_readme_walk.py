"""README's "Your model and data" walk, command by command, with a tiny model (extra options only shorten it)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from helpers import save_small_model

README = Path(__file__).resolve().parents[1] / "README.md"
SHORTER = {"sft": ["--steps", "3", "--eval-n", "2", "--max-new-tokens", "8", "--no-progress"],
           "train": ["total_steps=2", "eval_every=1", "data.eval_size=2", "rollout.max_new_tokens=8"],
           "eval": ["--n", "2", "--max-new-tokens", "8", "--no-progress"], "export": []}


def readme_commands() -> list[list[str]]:
    walk = README.read_text().split("## Your model and data", 1)[1].split("From a local model folder", 1)[1]
    section = walk.split("```bash", 1)[1].split("```", 1)[0]
    text = re.sub(r"\\\n\s*", " ", section)
    return [shlex.split(line.split("#", 1)[0]) for line in text.splitlines() if line.startswith("spro ")]


def test_the_readme_walk_runs(tmp_path, monkeypatch):
    from spro.cli import main

    commands = readme_commands()
    assert [c[1] for c in commands] == ["export", "sft", "train", "eval", "export"]
    monkeypatch.chdir(tmp_path)
    save_small_model(Path("models/base"), max_position_embeddings=512)
    rows = [{"prompt": [{"role": "user", "content": f"{a}+{b}="}], "answer": str(a + b), "solution": f"#### {a + b}"}
            for a in range(6) for b in range(6)]
    Path("problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    Path("test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[30:]))
    for cmd in commands[1:]:  # the first converts a GGUF file (tests/models/test_smollm2.py, make test-slow)
        assert main(cmd[1:] + SHORTER[cmd[1]]) == 0, cmd
    assert (Path("models/sft") / "sft_config.json").is_file()
    assert (Path("runs/lora/checkpoints/step-000002") / "adapter_model.safetensors").is_file()
    report = json.loads(Path("runs/lora/eval.json").read_text())
    assert report["n"] == 2 and "mean@4" in report
    assert (Path("models/spro-lora-merged") / "model.safetensors").is_file()
    assert "step 2/2" in Path("runs/lora/train.log").read_text()

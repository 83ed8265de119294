"""benchmarks/gpu_check.py: the CUDA run (skipped without CUDA) and a CPU smoke run of the script itself."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text: str) -> dict[str, list[float]]:
    return {m.group(1): [float(x) for x in m.group(2).split()]
            for m in re.finditer(r"^(grpo|spro)\s+([\d.\s]+)$", text, re.M)}


def test_smoke_run_on_cpu_prints_the_table_and_the_ratio(tmp_path, capsys):
    check = _gpu_check()
    if not torch.cuda.is_available():
        assert check.main([]) == 1
        assert "no CUDA device here; nothing was run" in capsys.readouterr().err
    assert check.main(["--allow-cpu", "--hidden", "32", "--layers", "1", "--heads", "2", "--intermediate", "64",
                       "--prompts", "2", "--generations", "2", "--new-tokens", "4", "--steps", "2",
                       "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == {"grpo", "spro"} and all(len(r) == 7 and min(r) > 0 for r in rows.values())
    ratio = float(re.search(r"SPRO / GRPO step time: ([\d.]+)", out).group(1))
    assert ratio == pytest.approx(rows["spro"][0] / rows["grpo"][0], rel=0.05)  # the table rounds to ms
    stages = re.findall(r"^(grpo|spro)/bf16\s+(generation|logprob|update)((?:\s+[\d.]+){7})$", out, re.M)
    assert [(a, s) for a, s, _ in stages] == [(a, s) for a in ("grpo", "spro") for s in ("generation", "logprob", "update")]
    # seconds and tokens/s (GFLOP/s of this 1-layer model rounds to 0.0)
    assert all(float(v.split()[0]) > 0 and float(v.split()[5]) > 0 for _, _, v in stages)
    assert re.search(r"bf16 matmul peak 1024x576x1536: \d+ GFLOP/s", out)
    floors = re.findall(r"^(grpo|spro)/bf16: step ([\d.]+) s, roofline floor of its stages ([\d.]+) s", out, re.M)
    assert [a for a, _, _ in floors] == ["grpo", "spro"] and all(0 < float(f) < float(t) for _, t, f in floors)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_check_on_cuda(tmp_path, capsys):
    assert _gpu_check().main(["--steps", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "precision bf16" in out and set(_rows(out)) == {"grpo", "spro"}
    assert re.search(r"SPRO / GRPO step time: [\d.]+", out)

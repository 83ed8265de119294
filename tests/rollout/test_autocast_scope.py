"""bf16 generation in one autocast region (weights cast once per call, issue 23): the same tokens as one
autocast region per decode step, so the same sampling distribution."""

from __future__ import annotations

import contextlib

import pytest
import torch

from spro.models.loading import load_model
from spro.models.precision import apply_precision, autocast_scope
from spro.rollout import hf
from spro.rollout.generate import generate_completions


@pytest.mark.parametrize("share", [True, False], ids=["shared-prefix", "plain"])
def test_one_autocast_region_samples_the_same_tokens(model_dir, monkeypatch, share):
    model, tok = load_model(str(model_dir))
    apply_precision(model, "bf16", "cpu")
    backend = hf.HFGenerateBackend(model, tok, max_new_tokens=12, share_prompt_prefix=share)
    prompts = ["12+3=", "7*8=", "100-1="]
    torch.manual_seed(0)
    got = backend.generate(prompts, 4)
    monkeypatch.setattr(hf, "autocast_scope", lambda m: contextlib.nullcontext())  # a region per forward pass
    torch.manual_seed(0)
    want = backend.generate(prompts, 4)
    assert torch.equal(got.completion_ids, want.completion_ids) and torch.equal(got.completion_mask, want.completion_mask)


def test_autocast_scope_and_evaluation_generation(model_dir, monkeypatch):
    model, tok = load_model(str(model_dir))
    with autocast_scope(model):  # no precision applied: no region
        assert not torch.is_autocast_enabled("cpu")
    apply_precision(model, "bf16", "cpu")
    with autocast_scope(model):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    torch.manual_seed(0)
    a = generate_completions(model, tok, ["1+1="], max_new_tokens=8, do_sample=True, num_return_sequences=3, seed=0)
    from spro.rollout import generate

    monkeypatch.setattr(generate, "autocast_scope", lambda m: contextlib.nullcontext())
    b = generate_completions(model, tok, ["1+1="], max_new_tokens=8, do_sample=True, num_return_sequences=3, seed=0)
    assert a == b

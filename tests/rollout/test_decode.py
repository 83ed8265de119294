"""The rollout's own decode loop (spro.rollout.decode) samples what `generate` samples (issue 23)."""

from __future__ import annotations

import pytest
import torch

from spro.models.loading import load_model
from spro.models.precision import apply_precision
from spro.rollout.decode import supports_sample_decode
from spro.rollout.hf import HFGenerateBackend

PROMPTS = ["12+3=", "7*8=", "100-1=", "5="]  # different lengths: left padding


def both(model, tok, seed=0, **kw):
    out = {}
    for loop in (True, False):
        backend = HFGenerateBackend(model, tok, decode_loop=loop, **kw)
        torch.manual_seed(seed)
        out[loop] = backend.generate(PROMPTS, 3)
    return out[True], out[False]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("share", [True, False], ids=["shared-prefix", "plain"])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.7, "top_p": 0.9, "top_k": 5}], ids=["plain-sampling", "warped"])
def test_same_tokens_as_generate(model_dir, precision, share, sampling):
    model, tok = load_model(str(model_dir))
    apply_precision(model, precision, "cpu")
    model.eval()
    assert supports_sample_decode(model, sampling.get("top_k"))
    for eos in (tok.eos_token, "1"):  # "1": a frequent token, so that rows stop at different steps
        tok.eos_token = eos
        a, b = both(model, tok, max_new_tokens=12, share_prompt_prefix=share, **sampling)
        assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.completion_mask, b.completion_mask)
        assert a.completions == b.completions


def test_sampled_token_statistics_match_the_model(model_dir):
    """Over many samples of the first response token, the frequencies follow softmax(logits / T)."""
    model, tok = load_model(str(model_dir))
    model.eval()
    backend = HFGenerateBackend(model, tok, max_new_tokens=1, temperature=1.5)
    torch.manual_seed(0)
    batch = backend.generate(["12+3="], 4000)
    ids = tok(["12+3="], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        p = torch.softmax(model(input_ids=ids).logits[0, -1].float() / 1.5, -1)
    counts = torch.bincount(batch.completion_ids[:, 0], minlength=p.numel()).double()
    expected = 4000 * p.double()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = p.numel() - 1  # chi-square with df degrees of freedom: mean df, sd sqrt(2 df)
    assert chi2 < df + 5 * (2 * df) ** 0.5
    # ... and the same counts are far from a wrong temperature's distribution
    wrong = 4000 * torch.softmax(torch.log(p.double()) * 1.5, -1)  # T = 1 instead of 1.5
    assert float(((counts - wrong) ** 2 / wrong).sum()) > chi2


def test_a_generation_config_that_adds_processors_goes_through_generate(model_dir):
    model, tok = load_model(str(model_dir))
    assert supports_sample_decode(model)
    model.generation_config.repetition_penalty = 1.2
    assert not supports_sample_decode(model)
    model, tok = load_model(str(model_dir))
    model.generation_config.top_k = 20
    assert not supports_sample_decode(model) and supports_sample_decode(model, top_k=5)

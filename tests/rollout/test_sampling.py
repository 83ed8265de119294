"""The rollout backend samples from softmax(logits / T): sampled-token statistics (issue 23)."""

from __future__ import annotations

import pytest
import torch

from spro.models.loading import load_model
from spro.models.precision import apply_precision
from spro.rollout.hf import HFGenerateBackend


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sampled_token_statistics_match_the_model(model_dir, precision):
    """Over many samples of the first response token, the counts follow softmax(logits / T) of the same
    model (chi-square test), and not the distribution of another temperature."""
    model, tok = load_model(str(model_dir))
    apply_precision(model, precision, "cpu")
    model.eval()
    backend = HFGenerateBackend(model, tok, max_new_tokens=1, temperature=1.5)
    torch.manual_seed(0)
    batch = backend.generate(["12+3="], 4000)
    ids = tok(["12+3="], return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].float()

    def chi2(temperature: float) -> float:
        expected = 4000 * torch.softmax(logits.double() / temperature, -1)
        counts = torch.bincount(batch.completion_ids[:, 0], minlength=logits.numel()).double()
        return float(((counts - expected) ** 2 / expected).sum())

    df = logits.numel() - 1  # chi-square with df degrees of freedom: mean df, sd sqrt(2 df)
    assert chi2(1.5) < df + 5 * (2 * df) ** 0.5
    assert chi2(0.5) > df + 5 * (2 * df) ** 0.5


def test_min_p_and_repetition_penalty_reach_generate(model_dir, monkeypatch):
    """rollout.min_p near 1 keeps only the most likely token (the greedy response); repetition_penalty is passed
    to generate; at their defaults (off) generate is called with neither (the same call as before they existed)."""
    from spro.config import load_config
    from spro.rollout import make_backend

    model, tok = load_model(str(model_dir))
    model.eval()
    greedy = HFGenerateBackend(model, tok, max_new_tokens=8, top_k=1)
    torch.manual_seed(0)
    want = greedy.generate(["12+3="], 4).completion_ids
    torch.manual_seed(1)
    got = HFGenerateBackend(model, tok, max_new_tokens=8, min_p=0.999).generate(["12+3="], 4).completion_ids
    assert torch.equal(got, want)

    seen = []
    real = type(model).generate

    def spy(self, *args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("min_p", "repetition_penalty")})
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "generate", spy)
    r = load_config(overrides=["rollout.repetition_penalty=1.3", "rollout.min_p=0.05", "rollout.max_new_tokens=4"]).rollout
    make_backend("hf", model, tok, r).generate(["12+3="], 2)
    make_backend("hf", model, tok, load_config(overrides=["rollout.max_new_tokens=4"]).rollout).generate(["12+3="], 2)
    assert seen == [{"min_p": 0.05, "repetition_penalty": 1.3}, {"min_p": None, "repetition_penalty": None}]

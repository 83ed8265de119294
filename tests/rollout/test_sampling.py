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

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
    to generate; at their defaults (off) generate is called with their neutral values."""
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
    assert seen == [{"min_p": 0.05, "repetition_penalty": 1.3}, {"min_p": None, "repetition_penalty": 1.0}]


def test_the_models_generation_config_does_not_change_what_is_sampled(model_dir):
    """generate fills every setting it is not given from the model's generation_config.json (Qwen2.5-Instruct's
    sets top_k=20 and repetition_penalty=1.05): the hf backend passes each one, so a model file that sets them
    samples the same tokens for a seed as one that does not, and a warning names what is not used."""
    model, tok = load_model(str(model_dir))
    model.eval()

    def sample():
        backend = HFGenerateBackend(model, tok, max_new_tokens=12)
        torch.manual_seed(3)
        return backend.generate(["12+3=", "7*8="], 4).completion_ids

    want = sample()
    gc = model.generation_config
    for k, v in dict(top_k=1, top_p=0.1, min_p=0.9, typical_p=0.2, epsilon_cutoff=0.3, eta_cutoff=0.3,
                     repetition_penalty=5.0, no_repeat_ngram_size=1, min_new_tokens=12, temperature=0.05,
                     suppress_tokens=[tok.eos_token_id], renormalize_logits=True).items():
        setattr(gc, k, v)
    with pytest.warns(UserWarning, match=r"generation_config sets .*top_k=1.*repetition_penalty=5.0.*rollout\.top_k=1"):
        got = sample()
    assert torch.equal(got, want)
    assert not torch.equal(model.generate(**tok(["12+3="], return_tensors="pt", add_special_tokens=False),
                                          max_new_tokens=12, do_sample=True, pad_token_id=tok.pad_token_id)[0, -12:],
                           want[0])  # (the settings do change generate's own default call)


def test_evaluation_is_plain_greedy_whatever_the_models_generation_config_says(model_dir):
    """generate_completions (evaluation) decodes greedily with nothing from generation_config.json: the same
    texts with a file that sets a repetition penalty, n-gram blocking, suppressed eos and a minimum length."""
    from spro.rollout.generate import generate_completions

    model, tok = load_model(str(model_dir))
    prompts = ["12+3=", "7*8=", "5-2="]
    want = generate_completions(model, tok, prompts, max_new_tokens=10)
    gc = model.generation_config
    for k, v in dict(repetition_penalty=5.0, no_repeat_ngram_size=1, suppress_tokens=[tok.eos_token_id],
                     min_new_tokens=10, top_k=1, do_sample=True).items():
        setattr(gc, k, v)
    assert generate_completions(model, tok, prompts, max_new_tokens=10) == want

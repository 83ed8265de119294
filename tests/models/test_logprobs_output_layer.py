"""The log-prob passes run the output layer only where a response token is predicted (issue 23).

Compared with the full computation they replaced: every position's logits, log-softmax in float32,
the response tokens' entries gathered."""

from __future__ import annotations

import pytest
import torch

from spro.models.loading import load_model
from spro.models.logprobs import logps_no_grad, sequence_logps
from spro.rollout.batch import RolloutBatch


def full_logps(model, batch, temperature):
    """The old convention: logits at every position of prompt + response, fp32 log-softmax, gathered."""
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    attn = torch.cat([batch.prompt_mask, batch.completion_mask], 1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits.float()
    P, T = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    logp = torch.log_softmax(logits[:, P - 1 : P + T - 1] / temperature, -1)
    ent = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1), ent


def make_batch(G=3, n=2, P=5, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = n * G
    p_ids = torch.randint(3, 20, (n, P), generator=g).repeat_interleave(G, 0)
    p_mask = torch.ones(n, P, dtype=torch.long)
    p_mask[0, :2] = 0  # left padding
    p_mask = p_mask.repeat_interleave(G, 0)
    p_ids = p_ids.masked_fill(p_mask == 0, 0)
    c_ids = torch.randint(3, 20, (B, T), generator=g)
    lengths = torch.tensor([T, 1, 4, 2, T, 5])[:B]
    c_mask = (torch.arange(T)[None] < lengths[:, None]).long()
    c_ids = c_ids.masked_fill(c_mask == 0, 0)
    return RolloutBatch(prompt_ids=p_ids, prompt_mask=p_mask, completion_ids=c_ids, completion_mask=c_mask,
                        truncated=lengths == T, group_ids=torch.arange(n).repeat_interleave(G),
                        prompts=[""] * B, completions=[""] * B)


@pytest.mark.parametrize("group_size", [None, 3], ids=["plain", "shared-prefix"])
def test_response_only_output_layer_equals_the_full_computation(model_dir, group_size):
    model, _ = load_model(str(model_dir))
    model.eval()
    batch = make_batch()
    m = batch.completion_mask.bool()
    with torch.no_grad():
        want, want_ent = full_logps(model, batch, 0.7)
        got, got_ent = sequence_logps(model, batch, temperature=0.7, with_entropy=True, group_size=group_size)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert float((got - want)[m].abs().max()) < 2e-6
    assert float((got_ent - want_ent)[m].abs().max()) < 2e-6
    assert torch.all(got[~m] == 0) and torch.all(got_ent[~m] == 0)  # padding is not computed


def test_output_layer_runs_on_response_tokens_only(model_dir):
    model, _ = load_model(str(model_dir))
    batch = make_batch()
    B, T = batch.completion_ids.shape
    rows = []
    model.get_output_embeddings().register_forward_hook(lambda mod, i, o: rows.append(i[0].reshape(-1, i[0].shape[-1]).shape[0]))
    with torch.no_grad():
        sequence_logps(model, batch)  # the response tokens only
        sequence_logps(model, batch, group_size=3)  # the prompts' last positions (once per group), then the rest
    assert rows == [int(batch.completion_mask.sum()), 2, int(batch.completion_mask[:, 1:].sum())]
    rows.clear()
    sequence_logps(model, batch)  # with gradients: the response positions, padding included (see _forward_kept)
    assert rows == [B * (T + 1)]


def test_gradients_and_chunks_match_the_full_computation(model_dir):
    model, _ = load_model(str(model_dir))
    model.eval()
    batch = make_batch()
    m = batch.completion_mask.bool()
    want, _ = full_logps(model, batch, 1.0)
    (want[m].sum()).backward()
    g_want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got, _ = sequence_logps(model, batch, group_size=3)
    assert torch.all(got[~m] == 0)
    got.sum().backward()  # padding holds 0 and carries no gradient
    for a, b in zip(model.parameters(), g_want):
        assert torch.allclose(a.grad, b, atol=1e-5, rtol=1e-4)
    chunked, _ = logps_no_grad(model, batch, temperature=1.0, with_entropy=False, chunk=4)
    assert float((chunked - want.detach())[m].abs().max()) < 2e-6

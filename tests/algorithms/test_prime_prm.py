"""PRIME's implicit PRM (spro.algorithms.prm): loss, update, isolation from the policy, filter, checkpoints.

The PRM works on the trainer's RolloutBatch with the trainer's log-prob function; the references here
are plain loops: one unpadded forward pass per response, log_softmax, BCE, AdamW.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spro.algorithms.prm import ImplicitPRM, filter_groups_by_accuracy, implicit_prm_loss
from spro.models.logprobs import logprob_fn
from spro.models.tiny import build_char_tokenizer, build_tiny_model


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture()
def policy(tok):
    return build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)


def rollout(tok, model, G=3):
    """G sampled responses to each of two prompts of different lengths (left-padded prompts)."""
    from spro.rollout import HFGenerateBackend

    torch.manual_seed(0)
    return HFGenerateBackend(model, tok, max_new_tokens=6).generate(["Q:1+2=", "Q:12+34+5="], G)


LABELS = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])


def plain_logps(model, batch, i, temperature=1.0):
    """log-probs of response i's valid tokens from one forward pass of that row alone, without padding."""
    p = batch.prompt_ids[i][batch.prompt_mask[i].bool()]
    n = int(batch.completion_mask[i].sum())
    c = batch.completion_ids[i, :n]
    ids = torch.cat([p, c]).unsqueeze(0)
    logits = model(input_ids=ids).logits[0].float() / temperature
    return torch.log_softmax(logits[len(p) - 1 : len(p) - 1 + n], -1).gather(1, c.unsqueeze(1)).squeeze(1)


# ---------------------------------------------------------------------------- the loss


def test_loss_matches_hand_computation():
    beta = 0.5
    # row 0: masked diff sum = (0.5 + 1.5) = 2.0 -> score 1.0 ; row 1: diff sum -4 -> score -2.0
    prm = torch.tensor([[-1.0, -0.5, -7.0], [-3.0, -3.0, -2.0]])
    ref = torch.tensor([[-1.5, -2.0, 99.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # the third column is padding (garbage there)
    labels = torch.tensor([1.0, 0.0])
    got = implicit_prm_loss(prm, ref, mask, labels, beta)
    # BCE(sigmoid(1), 1) = log(1 + e^-1); BCE(sigmoid(-2), 0) = -log(1 - sigmoid(-2)) = log(1 + e^-2)
    want = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 2
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert want == pytest.approx(0.2200948, rel=1e-6)
    # the same as PRIME's form: BCE on the sigmoid of beta * masked sum
    prime_form = F.binary_cross_entropy((beta * ((prm - ref) * mask).sum(1)).sigmoid(), labels)
    assert got.item() == pytest.approx(prime_form.item(), rel=1e-6)
    # soft labels work too
    soft = implicit_prm_loss(prm, ref, mask, torch.tensor([0.25, 0.5]), beta, reduction="none")
    s = torch.tensor([1.0, -2.0])
    hand = -(torch.tensor([0.25, 0.5]) * torch.log(torch.sigmoid(s)) + torch.tensor([0.75, 0.5]) * torch.log(1 - torch.sigmoid(s)))
    torch.testing.assert_close(soft, hand)


def test_process_rewards(policy):
    prm = ImplicitPRM(policy, beta=0.05, lr=1e-3)
    a = torch.tensor([[-1.0, -2.0, -3.0]])
    b = torch.tensor([[-2.0, -2.0, -1.0]])
    m = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(prm.process_rewards(a, b, m), torch.tensor([[0.05, 0.0, 0.0]]))


# ---------------------------------------------------------------------------- the model


def test_compute_logp_matches_plain_forwards(tok, policy):
    """compute_logp = one unpadded forward per response (positions follow the attention mask), for every
    micro-batch size and with or without prompt-prefix sharing; no gradient; 0 at padding."""
    batch = rollout(tok, policy)
    for group_size, micro in ((None, None), (3, None), (3, 3), (None, 2)):
        prm = ImplicitPRM(policy, lr=1e-3, temperature=0.7, group_size=group_size, micro_batch=micro)
        got = prm.compute_logp(batch)
        assert not got.requires_grad and bool((got[~batch.completion_mask.bool()] == 0).all())
        with torch.no_grad():
            for i in range(len(batch)):
                n = int(batch.completion_mask[i].sum())
                torch.testing.assert_close(got[i, :n], plain_logps(policy, batch, i, 0.7), atol=1e-5, rtol=1e-5)


def test_an_untrained_prm_gives_q_zero_with_the_trainers_logprobs(tok, policy):
    """With the trainer's log-prob function (TrainerContext.logprobs), prm_logp - ref_logp is exactly 0."""
    batch = rollout(tok, policy)
    ref = copy.deepcopy(policy).eval()
    for group_size in (None, 3):
        fn = logprob_fn(temperature=0.7, group_size=group_size)
        ref_logp = fn(ref, batch) * batch.completion_mask
        prm = ImplicitPRM(ref, logprobs=fn, lr=1e-3)
        assert torch.equal(prm.compute_logp(batch), ref_logp)


def test_update_lowers_loss_and_only_trains_the_prm(tok, policy):
    batch = rollout(tok, policy)
    cmask = batch.completion_mask
    ref = copy.deepcopy(policy)
    policy_before = {k: v.clone() for k, v in policy.state_dict().items()}
    ref_before = {k: v.clone() for k, v in ref.state_dict().items()}
    prm = ImplicitPRM(policy, beta=0.05, lr=1e-2)
    ref_logp = logprob_fn()(ref, batch) * cmask

    def loss_now() -> float:
        return implicit_prm_loss(prm.compute_logp(batch), ref_logp, cmask.float(), LABELS, prm.beta).item()

    before = loss_now()
    assert before == pytest.approx(math.log(2.0), abs=1e-5)  # PRM == reference -> q = 0 -> sigmoid 0.5
    m1 = prm.update(batch, LABELS, ref_logp)
    assert m1["loss"] == pytest.approx(before, abs=1e-6)
    assert m1["accuracy"] == pytest.approx(0.5)  # every score is exactly 0: half credit
    assert m1["grad_norm"] > 0
    after = loss_now()
    assert after < before - 1e-4
    for _ in range(20):
        m = prm.update(batch, LABELS, ref_logp)
    assert loss_now() < after
    assert m["accuracy"] == 1.0  # the PRM has learned to separate this batch's labels
    assert prm.num_updates == 21

    # the policy and the reference are untouched and got no gradients
    for k, v in policy.state_dict().items():
        assert torch.equal(v, policy_before[k]), k
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ref_before[k]), k
    assert all(p.grad is None for p in policy.parameters())
    assert all(p.grad is None for p in ref.parameters())
    assert any(not torch.equal(v, policy_before[k]) for k, v in prm.model.state_dict().items())


def test_update_equals_a_hand_loop(tok, policy):
    """One update (micro-batches, prompt sharing, shared ref_logp) = a plain loop: full-batch BCE over
    per-row forwards, backward, clip, AdamW step."""
    batch = rollout(tok, policy)
    cm = batch.completion_mask
    ref = copy.deepcopy(policy).eval()
    start = copy.deepcopy(policy)  # make the PRM differ from the reference: not at the symmetric point
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ref_logp = logprob_fn()(ref, batch) * cm

    # adam_eps=1: the first AdamW step is ~lr * grad (not lr * sign(grad), which float noise can flip)
    prm = ImplicitPRM(start, lr=1e-2, max_grad_norm=0.5, adam_eps=1.0, group_size=3, micro_batch=3)
    m = prm.update(batch, LABELS, ref_logp=ref_logp)

    loop_model = copy.deepcopy(start)
    opt = torch.optim.AdamW(loop_model.parameters(), lr=1e-2, eps=1.0, weight_decay=0.0)
    loss = 0.0
    for i in range(len(batch)):
        lp = plain_logps(loop_model, batch, i)
        s = 0.05 * (lp - ref_logp[i, : len(lp)]).sum()
        y = float(LABELS[i])
        loss = loss - (y * F.logsigmoid(s) + (1 - y) * F.logsigmoid(-s)) / len(batch)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(list(loop_model.parameters()), 0.5)
    opt.step()

    assert m["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert m["grad_norm"] == pytest.approx(float(gn), rel=1e-4)
    for (name, a), c in zip(prm.model.named_parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-8, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(prm.model.parameters(), start.parameters()))


def test_micro_batches_give_the_full_batch_gradient(tok, policy):
    batch = rollout(tok, policy)
    cm = batch.completion_mask
    ref_logp = (logprob_fn()(policy, batch) - 0.3) * cm  # q != 0: not the symmetric init gradient
    # adam_eps=1: the first step is ~lr * grad, so equal parameters mean equal gradients (with a tiny eps the
    # step is lr * sign(grad), which float noise in near-zero gradients can flip)
    full = ImplicitPRM(policy, beta=0.05, lr=1e-2, max_grad_norm=None, adam_eps=1.0)
    micro = ImplicitPRM(policy, beta=0.05, lr=1e-2, max_grad_norm=None, adam_eps=1.0, micro_batch=4)
    mf, mm = full.update(batch, LABELS, ref_logp), micro.update(batch, LABELS, ref_logp)
    assert mf["loss"] == pytest.approx(mm["loss"], rel=1e-5)
    assert mf["grad_norm"] == pytest.approx(mm["grad_norm"], rel=1e-4)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), micro.model.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=k)


def test_state_dict_and_save_load_round_trip(tok, policy, tmp_path):
    batch = rollout(tok, policy)
    ref_logp = torch.zeros(batch.completion_mask.shape) - 3.0
    a = ImplicitPRM(policy, beta=0.05, lr=1e-2)
    a.update(batch, LABELS, ref_logp)
    state = copy.deepcopy(a.state_dict())
    b = ImplicitPRM(policy, beta=0.05, lr=1e-2)
    b.load_state_dict(state)
    a.save(tmp_path)
    c = ImplicitPRM(policy, beta=0.05, lr=1e-2)
    c.load(tmp_path)
    assert b.num_updates == c.num_updates == 1
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    ma, mb, mc = (p.update(batch, labels, ref_logp) for p in (a, b, c))  # need the restored Adam moments
    assert ma == mb == mc
    for x, y, z in zip(a.model.parameters(), b.model.parameters(), c.model.parameters()):
        assert torch.equal(x, y) and torch.equal(x, z)
    with pytest.raises(ValueError, match="beta"):
        ImplicitPRM(policy, beta=0.1, lr=1e-2).load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({"model": state["model"]})
    with pytest.raises(ValueError, match="model.safetensors is missing"):
        b.load(tmp_path / "nowhere")


def test_bad_inputs(tok, policy):
    batch = rollout(tok, policy)
    prm = ImplicitPRM(policy, beta=0.05, lr=1e-3)
    ref_logp = torch.zeros(batch.completion_mask.shape)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prm.update(batch, torch.tensor([2.0, 0.0, 1.0, 0.0, 0.0, 0.0]), ref_logp)
    with pytest.raises(ValueError, match="entries"):
        prm.update(batch, torch.tensor([1.0, 0.0]), ref_logp)
    with pytest.raises(ValueError, match="ref_logp"):
        prm.update(batch, LABELS, ref_logp[:, :-1])
    with pytest.raises(ValueError, match="ref_logp is required"):
        prm.update(batch, LABELS)
    with pytest.raises(ValueError, match="micro_batch"):
        ImplicitPRM(policy, lr=1e-3, micro_batch=0.5)
    with pytest.raises(ValueError, match="beta"):
        ImplicitPRM(policy, beta=0.0, lr=1e-3)


def test_grad_reducer_sees_every_parameter_and_may_get_an_empty_batch(tok, policy):
    seen = []

    def reducer(params, n):
        seen.append((n, all(p.grad is not None for p in params)))
        for p in params:
            p.grad.fill_(0.0)  # e.g. another process's gradients cancelled ours

    prm = ImplicitPRM(policy, lr=1e-2, grad_reducer=reducer)
    before = [p.detach().clone() for p in prm.model.parameters()]
    empty = rollout(tok, policy).select(torch.arange(0))
    prm.update(empty, LABELS[:0], torch.zeros(empty.completion_mask.shape))
    assert seen == [(0, True)]
    assert all(torch.equal(a, b) for a, b in zip(before, prm.model.parameters()))
    with pytest.raises(ValueError, match="empty"):
        ImplicitPRM(policy, lr=1e-2).update(empty, LABELS[:0], torch.zeros(empty.completion_mask.shape))


# ---------------------------------------------------------------------------- prompt filter


def filter_loop(rewards, group_ids, low, high):
    """Obviously-correct reference: one group at a time, in plain Python."""
    rewards, group_ids = list(map(float, rewards)), list(map(int, group_ids))
    keep = []
    for g in group_ids:
        members = [r for r, h in zip(rewards, group_ids) if h == g]
        acc = sum(members) / len(members)
        keep.append(low - 1e-9 <= acc <= high + 1e-9)
    return keep


def test_filter_matches_loop():
    gen = torch.Generator().manual_seed(0)
    for trial in range(50):
        g = int(torch.randint(1, 8, (1,), generator=gen))
        size = int(torch.randint(1, 9, (1,), generator=gen))
        ids = torch.arange(g).repeat_interleave(size)
        ids = ids[torch.randperm(ids.numel(), generator=gen)] * 7 + 3  # shuffled, non-contiguous ids
        rewards = torch.randint(0, 2, ids.shape, generator=gen).float()
        low, high = [(0.2, 0.8), (0.0, 1.0), (0.5, 0.5), (0.25, 0.75)][trial % 4]
        got = filter_groups_by_accuracy(rewards, ids, low, high)
        assert got.dtype == torch.bool
        assert got.tolist() == filter_loop(rewards, ids, low, high)


def test_filter_bounds_are_inclusive():
    # groups of 5: accuracies 0/5, 1/5, 2/5, 4/5, 5/5
    rewards = torch.tensor([0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1.0])
    ids = torch.arange(5).repeat_interleave(5)
    keep = filter_groups_by_accuracy(rewards, ids)
    assert keep.view(5, 5).all(1).tolist() == [False, True, True, True, False]
    assert (keep.view(5, 5).all(1) == keep.view(5, 5).any(1)).all()  # whole groups kept or dropped
    with pytest.raises(ValueError):
        filter_groups_by_accuracy(rewards, ids[:-1])
    with pytest.raises(ValueError):
        filter_groups_by_accuracy(rewards, ids, 0.8, 0.2)

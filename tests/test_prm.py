"""PRIME's implicit PRM (spro.prm): loss, update, isolation from the policy, filter, checkpoints."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spro.prm import ImplicitPRM, completion_token_logps, filter_groups_by_accuracy, implicit_prm_loss
from spro.tiny import build_char_tokenizer, build_tiny_model


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture()
def policy(tok):
    return build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)


def make_batch(tok):
    """4 responses to 2 prompts (same-length prompts), completions right-padded."""
    prompts = ["Q:1+2=", "Q:1+2=", "Q:4+4=", "Q:4+4="]
    completions = ["1+2=3;A:3", "1+2=4;A:4", "4+4=8;A:8", "A:9"]
    p = [tok(x, add_special_tokens=False)["input_ids"] for x in prompts]
    c = [tok(x, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for x in completions]
    t = max(len(x) for x in c)
    comp = torch.full((4, t), tok.pad_token_id, dtype=torch.long)
    cmask = torch.zeros(4, t, dtype=torch.long)
    for i, ids in enumerate(c):
        comp[i, : len(ids)] = torch.tensor(ids)
        cmask[i, : len(ids)] = 1
    prompt_ids = torch.tensor(p)
    input_ids = torch.cat([prompt_ids, comp], dim=1)
    attention_mask = torch.cat([torch.ones_like(prompt_ids), cmask], dim=1)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    return input_ids, attention_mask, cmask, labels


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


def test_token_logps_match_a_plain_forward(tok, policy):
    input_ids, attention_mask, cmask, _ = make_batch(tok)
    prm = ImplicitPRM(policy, beta=0.05, lr=1e-3)
    got = prm.token_logps(input_ids, attention_mask, cmask)
    t = cmask.shape[1]
    with torch.no_grad():
        logits = policy(input_ids=input_ids, attention_mask=attention_mask).logits
    # slow loop: position p predicts token p+1
    want = torch.zeros_like(got)
    L = input_ids.shape[1]
    for i in range(input_ids.shape[0]):
        for j in range(t):
            pos = L - t + j
            want[i, j] = torch.log_softmax(logits[i, pos - 1], -1)[input_ids[i, pos]] * cmask[i, j]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not got.requires_grad
    # micro-batched forward gives the same numbers
    torch.testing.assert_close(prm.token_logps(input_ids, attention_mask, cmask, micro_batch=3), got)


def test_left_padded_prompts_match_unpadded_rows(tok, policy):
    """With prompts of different lengths left-padded, each row's log-probs equal those of the
    same row run alone without padding (positions follow the attention mask)."""
    prompts = ["Q:12+3=", "Q:1+2="]
    completion = "1+2=3;A:3"
    p = [tok(x, add_special_tokens=False)["input_ids"] for x in prompts]
    c = tok(completion, add_special_tokens=False)["input_ids"]
    width = max(map(len, p))
    rows, masks = [], []
    for ids in p:
        pad = width - len(ids)
        rows.append([tok.pad_token_id] * pad + ids + c)
        masks.append([0] * pad + [1] * (len(ids) + len(c)))
    input_ids, attention_mask = torch.tensor(rows), torch.tensor(masks)
    cmask = torch.ones(2, len(c), dtype=torch.long)
    got = ImplicitPRM(policy, beta=0.05, lr=1e-3).token_logps(input_ids, attention_mask, cmask)
    for i, ids in enumerate(p):
        alone = torch.tensor([ids + c])
        want = completion_token_logps(policy, alone, torch.ones_like(alone), len(c)).detach()
        torch.testing.assert_close(got[i : i + 1], want, atol=1e-5, rtol=1e-5)


def test_update_lowers_loss_and_only_trains_the_prm(tok, policy):
    input_ids, attention_mask, cmask, labels = make_batch(tok)
    ref = copy.deepcopy(policy)
    policy_before = {k: v.clone() for k, v in policy.state_dict().items()}
    ref_before = {k: v.clone() for k, v in ref.state_dict().items()}
    prm = ImplicitPRM(policy, ref, beta=0.05, lr=1e-2)
    ref_logp = prm.ref_token_logps(input_ids, attention_mask, cmask)

    def loss_now() -> float:
        logp = prm.token_logps(input_ids, attention_mask, cmask)
        return implicit_prm_loss(logp, ref_logp, cmask.float(), labels, prm.beta).item()

    before = loss_now()
    assert before == pytest.approx(math.log(2.0), abs=1e-5)  # PRM == reference -> q = 0 -> sigmoid 0.5
    m1 = prm.update(input_ids, attention_mask, cmask, ref_logp, labels)
    assert m1["prm/loss"] == pytest.approx(before, abs=1e-6)
    assert m1["prm/accuracy"] == pytest.approx(0.5)  # every score is exactly 0: half credit
    assert m1["prm/grad_norm"] > 0
    after = loss_now()
    assert after < before - 1e-4
    for _ in range(5):
        prm.update(input_ids, attention_mask, cmask, None, labels)  # ref_logp from ref_model
    assert loss_now() < after
    m = prm.update(input_ids, attention_mask, cmask, ref_logp, labels)
    assert m["prm/accuracy"] == 1.0  # the PRM has learned to separate this batch's labels
    assert prm.num_updates == 7

    # the policy and the reference are untouched and got no gradients
    for k, v in policy.state_dict().items():
        assert torch.equal(v, policy_before[k]), k
    for k, v in ref.state_dict().items():
        assert torch.equal(v, ref_before[k]), k
    assert all(p.grad is None for p in policy.parameters())
    assert all(p.grad is None for p in ref.parameters())
    # and the PRM did change
    assert any(not torch.equal(v, policy_before[k]) for k, v in prm.model.state_dict().items())


def test_micro_batches_give_the_full_batch_gradient(tok, policy):
    input_ids, attention_mask, cmask, labels = make_batch(tok)
    ref_logp = completion_token_logps(policy, input_ids, attention_mask, cmask.shape[1]).detach() * cmask
    # perturb the reference so that q != 0 and the gradient is not the symmetric init one
    ref_logp = ref_logp - 0.3 * cmask
    full = ImplicitPRM(policy, beta=0.05, lr=1e-2, max_grad_norm=None)
    micro = ImplicitPRM(policy, beta=0.05, lr=1e-2, max_grad_norm=None)
    mf = full.update(input_ids, attention_mask, cmask, ref_logp, labels)
    mm = micro.update(input_ids, attention_mask, cmask, ref_logp, labels, micro_batch=3)
    assert mf["prm/loss"] == pytest.approx(mm["prm/loss"], rel=1e-5)
    assert mf["prm/grad_norm"] == pytest.approx(mm["prm/grad_norm"], rel=1e-4)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), micro.model.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=k)


def test_state_dict_round_trip(tok, policy):
    input_ids, attention_mask, cmask, labels = make_batch(tok)
    ref_logp = completion_token_logps(policy, input_ids, attention_mask, cmask.shape[1]).detach() * cmask
    a = ImplicitPRM(policy, beta=0.05, lr=1e-2)
    a.update(input_ids, attention_mask, cmask, ref_logp, labels)
    state = copy.deepcopy(a.state_dict())
    b = ImplicitPRM(policy, beta=0.05, lr=1e-2)
    b.load_state_dict(state)
    assert b.num_updates == 1
    a.update(input_ids, attention_mask, cmask, ref_logp, labels)
    b.update(input_ids, attention_mask, cmask, ref_logp, labels)  # needs the restored Adam moments
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        torch.testing.assert_close(x, y, msg=k)
    with pytest.raises(ValueError, match="beta"):
        ImplicitPRM(policy, beta=0.1, lr=1e-2).load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({"model": state["model"]})


def test_bad_inputs(tok, policy):
    input_ids, attention_mask, cmask, labels = make_batch(tok)
    prm = ImplicitPRM(policy, beta=0.05, lr=1e-3)
    ref_logp = torch.zeros(cmask.shape)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prm.update(input_ids, attention_mask, cmask, ref_logp, torch.tensor([2.0, 0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="entries"):
        prm.update(input_ids, attention_mask, cmask, ref_logp, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="ref_logp"):
        prm.update(input_ids, attention_mask, cmask, ref_logp[:, :-1], labels)
    with pytest.raises(ValueError, match="ref_model"):
        prm.update(input_ids, attention_mask, cmask, None, labels)
    with pytest.raises(ValueError, match="micro_batch"):
        prm.update(input_ids, attention_mask, cmask, ref_logp, labels, micro_batch=0)
    with pytest.raises(ValueError, match="beta"):
        ImplicitPRM(policy, beta=0.0, lr=1e-3)


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

"""PRIME's implicit PRM (spro.algorithms.prm): loss, update, isolation from the policy, filter, checkpoints."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spro.algorithms.prm import ImplicitPRM, completion_token_logps, filter_groups_by_accuracy, implicit_prm_loss
from spro.models.tiny import build_char_tokenizer, build_tiny_model


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


# ---------------------------------------------------------------------------- the trainer hook


def _rollout(tok, model, G=3):
    from spro.rollout import HFGenerateBackend

    torch.manual_seed(0)
    return HFGenerateBackend(model, tok, max_new_tokens=6).generate(["Q:1+2=", "Q:12+34+5="], G)


def test_stage_logps_match_the_reference_convention(tok, policy):
    """PRMStage.compute_logp uses the trainer's sequence_logps: an untrained PRM gives q = 0 exactly,
    with and without prompt-prefix sharing, and equals completion_token_logps on the concatenation."""
    from spro.algorithms.prm import PRMStage
    from spro.models.logprobs import sequence_logps

    batch = _rollout(tok, policy)
    ref = copy.deepcopy(policy).eval()
    with torch.no_grad():
        ref_logp = sequence_logps(ref, batch, temperature=0.7)[0] * batch.completion_mask
    for group_size, micro in ((None, None), (3, None), (3, 3), (None, 2)):
        stage = PRMStage(ImplicitPRM(ref, lr=1e-3), temperature=0.7, group_size=group_size, micro_batch=micro)
        got = stage.compute_logp(batch)
        torch.testing.assert_close(got, ref_logp, rtol=1e-5, atol=1e-5)
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    am = torch.cat([batch.prompt_mask, batch.completion_mask], 1)
    plain = completion_token_logps(ref, ids, am, batch.completion_ids.shape[1], temperature=0.7) * batch.completion_mask
    torch.testing.assert_close(stage.compute_logp(batch), plain, rtol=1e-5, atol=1e-5)


def test_stage_update_equals_implicit_prm_update_and_a_hand_loop(tok, policy):
    """One PRMStage step (trainer batch, shared ref_logp, micro-batches) = ImplicitPRM.update on
    the concatenated tensors = a plain loop: full-batch BCE, backward, clip, AdamW step."""
    from spro.algorithms.prm import PRMStage

    batch = _rollout(tok, policy)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    am = torch.cat([batch.prompt_mask, batch.completion_mask], 1)
    cm = batch.completion_mask
    T = cm.shape[1]
    ref = copy.deepcopy(policy).eval()
    # make the PRM differ from the reference so the loss is not at its symmetric point
    start = copy.deepcopy(policy)
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ref_logp = completion_token_logps(ref, ids, am, T).detach() * cm

    # adam_eps=1: the first AdamW step is ~lr * grad (not lr * sign(grad), which float noise can flip)
    stage = PRMStage(ImplicitPRM(start, lr=1e-2, max_grad_norm=0.5, adam_eps=1.0), group_size=3, micro_batch=3)
    m_stage = stage.update(batch, labels, ref_logp=ref_logp)
    direct = ImplicitPRM(start, lr=1e-2, max_grad_norm=0.5, adam_eps=1.0)
    m_direct = direct.update(ids, am, cm, ref_logp, labels)

    # the obviously-correct loop
    loop_model = copy.deepcopy(start)
    opt = torch.optim.AdamW(loop_model.parameters(), lr=1e-2, eps=1.0, weight_decay=0.0)
    loss = 0.0
    for i in range(len(batch)):
        lp = completion_token_logps(loop_model, ids[i : i + 1], am[i : i + 1], T)[0]
        s = 0.05 * sum(float(cm[i, t]) * (lp[t] - ref_logp[i, t]) for t in range(T))
        y = float(labels[i])
        loss = loss - (y * F.logsigmoid(s) + (1 - y) * F.logsigmoid(-s)) / len(batch)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(list(loop_model.parameters()), 0.5)
    opt.step()

    assert m_stage["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert m_direct["prm/loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert m_stage["grad_norm"] == pytest.approx(float(gn), rel=1e-4)
    for (name, a), b, c in zip(stage.model.named_parameters(), direct.model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=name)
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-8, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(stage.model.parameters(), start.parameters()))
    with pytest.raises(ValueError, match="ref_logp is required"):
        stage.update(batch, labels)


def test_stage_save_load_round_trip(tok, policy, tmp_path):
    from spro.algorithms.prm import PRMStage

    batch = _rollout(tok, policy)
    ref_logp = torch.zeros(batch.completion_mask.shape) - 3.0
    a = PRMStage(ImplicitPRM(policy, lr=1e-2))
    a.update(batch, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0]), ref_logp=ref_logp)
    a.save(tmp_path)
    b = PRMStage(ImplicitPRM(policy, lr=1e-2))
    b.load(tmp_path)
    assert b.prm.num_updates == 1
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)
    # the optimiser continues identically
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    ma, mb = a.update(batch, labels, ref_logp=ref_logp), b.update(batch, labels, ref_logp=ref_logp)
    assert ma == mb
    for x, y in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="model.safetensors is missing"):
        b.load(tmp_path / "nowhere")


def test_grad_reducer_sees_every_parameter_and_may_get_an_empty_batch(tok, policy):
    seen = []

    def reducer(params, n):
        seen.append((n, all(p.grad is not None for p in params)))
        for p in params:
            p.grad.fill_(0.0)  # e.g. another process's gradients cancelled ours

    prm = ImplicitPRM(policy, lr=1e-2)
    before = [p.detach().clone() for p in prm.model.parameters()]
    ids, am, cm, labels = make_batch(tok)
    prm.update(ids[:0], am[:0], cm[:0], torch.zeros(0, cm.shape[1]), labels[:0], grad_reducer=reducer)
    assert seen == [(0, True)]
    assert all(torch.equal(a, b) for a, b in zip(before, prm.model.parameters()))
    with pytest.raises(ValueError, match="empty"):
        prm.update(ids[:0], am[:0], cm[:0], torch.zeros(0, cm.shape[1]), labels[:0])

"""spro.algorithms.losses against pure-Python loop references; gradients; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spro.algorithms.losses import AGG_MODES, agg_normaliser, aggregate_loss, entropy_from_logits, kl_penalty, policy_loss

SETTINGS = settings(max_examples=60, deadline=None)
MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def make(seed: int, garbage: bool = True):
    rng = np.random.default_rng(seed)
    B, T = int(rng.integers(1, 9)), int(rng.integers(1, 8))
    mask = torch.tensor(rng.random((B, T)) < rng.uniform(0.3, 1.0), dtype=torch.float64)
    if rng.random() < 0.3:
        mask[int(rng.integers(0, B))] = 0
    old = torch.tensor(-np.abs(rng.normal(size=(B, T))), dtype=torch.float64)
    logp = old + torch.tensor(rng.normal(size=(B, T)) * 0.3, dtype=torch.float64)
    ref = old + torch.tensor(rng.normal(size=(B, T)) * 0.5, dtype=torch.float64)
    advs = torch.tensor(rng.normal(size=(B, T)), dtype=torch.float64)
    ent = torch.tensor(rng.random((B, T)) * 3, dtype=torch.float64)
    if garbage:
        for x in (old, ref, advs, ent):
            x[mask == 0] = float("nan")
    return dict(logp=logp, old_logp=old, advantages=advs, mask=mask, ref_logp=ref, entropy=ent)


# ------------------------------------------------------------------ loop references


def ref_kl(lp, rl, kind):
    d = lp - rl
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d * d
    x = min(max(rl - lp, -20.0), 20.0)
    return min(max(math.exp(x) - x - 1.0, -10.0), 10.0)


def ref_aggregate(Lm, m, mode, max_len=None):
    B, T = len(m), len(m[0])
    if mode == "token-mean":
        n = sum(sum(row) for row in m)
        return sum(Lm[i][t] for i in range(B) for t in range(T) if m[i][t]) / max(n, 1)
    if mode == "seq-mean-token-mean":
        seqs = []
        for i in range(B):
            n = sum(m[i])
            if n:
                seqs.append(sum(Lm[i][t] for t in range(T) if m[i][t]) / n)
        return sum(seqs) / len(seqs) if seqs else 0.0
    if mode == "seq-mean-token-sum":
        seqs = [sum(Lm[i][t] for t in range(T) if m[i][t]) for i in range(B) if sum(m[i])]
        return sum(seqs) / len(seqs) if seqs else 0.0
    return sum(Lm[i][t] for i in range(B) for t in range(T) if m[i][t]) / (B * (max_len or T))


def ref_policy(b, low, high, agg, kl_coef, kl_est, ent_coef, max_len=None, clip_c=None, level="token"):
    m, lp, old, A = b["mask"].tolist(), b["logp"].tolist(), b["old_logp"].tolist(), b["advantages"].tolist()
    rl, ent = b["ref_logp"].tolist(), b["entropy"].tolist()
    B, T = len(m), len(m[0])
    # GSPO (level="sequence"): the ratio of response i is exp of the mean log-ratio over its valid tokens
    seq = [math.exp(sum(lp[i][t] - old[i][t] for t in range(T) if m[i][t]) / max(sum(m[i]), 1)) for i in range(B)]
    Lm = [[0.0] * T for _ in range(B)]
    pgm = [[0.0] * T for _ in range(B)]
    n = lowc = highc = dualc = 0
    akl = kl = en = 0.0
    for i in range(B):
        for t in range(T):
            if not m[i][t]:
                continue
            tok = math.exp(lp[i][t] - old[i][t])
            ratio = tok if level == "token" else seq[i]
            clipped = min(max(ratio, 1 - low), 1 + high)
            pg = max(-A[i][t] * ratio, -A[i][t] * clipped)
            if clip_c is not None and A[i][t] < 0:  # dual clip (verl's compute_policy_loss_vanilla)
                dualc += pg > -A[i][t] * clip_c
                pg = min(pg, -A[i][t] * clip_c)
            k = ref_kl(lp[i][t], rl[i][t], kl_est)
            pgm[i][t] = pg
            Lm[i][t] = pg + kl_coef * k - ent_coef * ent[i][t]
            n += 1
            lowc += ratio < 1 - low and A[i][t] < 0
            highc += ratio > 1 + high and A[i][t] > 0
            akl += (tok - 1) - math.log(tok)
            kl += k
            en += ent[i][t]
    n1 = max(n, 1)
    metrics = {"pg_loss": ref_aggregate(pgm, m, agg, max_len), "clip/low_frac": lowc / n1,
               "clip/high_frac": highc / n1, "approx_kl": akl / n1, "kl": kl / n1, "entropy": en / n1}
    if clip_c is not None:
        metrics["clip/dual_frac"] = dualc / n1
    return ref_aggregate(Lm, m, agg, max_len), metrics


# ------------------------------------------------------------------ tests


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["k1", "k2", "k3"]), scale=st.sampled_from([1.0, 30.0]))
def test_kl_penalty_matches_loop(seed, kind, scale):
    b = make(seed, garbage=False)
    lp, rl = b["logp"] * scale, b["ref_logp"] * scale  # scale 30 exercises the k3 clamps
    out = kl_penalty(lp, rl, kind)
    B, T = lp.shape
    expect = [[ref_kl(lp[i, t].item(), rl[i, t].item(), kind) for t in range(T)] for i in range(B)]
    torch.testing.assert_close(out, torch.tensor(expect, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    if kind != "k1":
        assert bool((out >= -1e-15).all())
    masked = kl_penalty(lp, rl, kind, mask=b["mask"])
    assert bool((masked[b["mask"] == 0] == 0).all())
    torch.testing.assert_close(masked[b["mask"] == 1], out[b["mask"] == 1])


def test_k3_value_and_clamp():
    lp, rl = torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.0, math.log(2.0), 50.0]])
    out = kl_penalty(lp, rl, "k3")
    assert out[0, 0].item() == 0.0
    assert out[0, 1].item() == pytest.approx(2.0 - math.log(2.0) - 1.0)
    assert out[0, 2].item() == 10.0  # exp(20) - 21 clamped to 10


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), V=st.integers(1, 9), scale=st.sampled_from([1.0, 100.0]))
def test_entropy_matches_loop(seed, V, scale):
    rng = np.random.default_rng(seed)
    z = torch.tensor(rng.normal(size=(2, 3, V)) * scale, dtype=torch.float64)
    if V > 1:
        z[0, 0, 0] = float("-inf")  # a forbidden token contributes 0
    out = entropy_from_logits(z)
    assert out.shape == (2, 3)
    expect = []
    for i in range(2):
        row = []
        for t in range(3):
            zs = z[i, t].tolist()
            mx = max(zs)
            ex = [math.exp(v - mx) for v in zs]
            s = sum(ex)
            row.append(-sum((e / s) * math.log(e / s) for e in ex if e > 0))
        expect.append(row)
    torch.testing.assert_close(out, torch.tensor(expect, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    assert bool(torch.isfinite(out).all()) and bool((out >= -1e-12).all())


def test_entropy_known_values_and_gradcheck():
    z = torch.zeros(1, 1, 4, dtype=torch.float64)
    assert entropy_from_logits(z).item() == pytest.approx(math.log(4))
    z = torch.tensor([[[1000.0, 0.0]]], dtype=torch.float64)  # no overflow
    assert entropy_from_logits(z).item() == pytest.approx(0.0, abs=1e-12)
    z = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(entropy_from_logits, (z,))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(MODES), extra=st.integers(0, 5))
def test_aggregate_matches_loop(seed, mode, extra):
    b = make(seed, garbage=False)
    Lm = b["advantages"]
    Lm_g = Lm.clone()
    Lm_g[b["mask"] == 0] = float("nan")  # never read
    T = Lm.shape[1]
    max_len = T + extra if mode == "seq-mean-token-sum-norm" else None
    out = aggregate_loss(Lm_g, b["mask"], mode, max_len)
    expect = ref_aggregate(Lm.tolist(), b["mask"].tolist(), mode, max_len)
    assert out.dim() == 0
    assert out.item() == pytest.approx(expect, rel=1e-12, abs=1e-12)


def test_aggregate_modes_differ_as_documented():
    Lm = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert aggregate_loss(Lm, m, "token-mean").item() == pytest.approx(8 / 5)
    assert aggregate_loss(Lm, m, "seq-mean-token-mean").item() == pytest.approx((1 + 4) / 2)
    assert aggregate_loss(Lm, m, "seq-mean-token-sum").item() == pytest.approx((4 + 4) / 2)
    assert aggregate_loss(Lm, m, "seq-mean-token-sum-norm").item() == pytest.approx(8 / (2 * 4))
    assert aggregate_loss(Lm, m, "seq-mean-token-sum-norm", 10).item() == pytest.approx(8 / (2 * 10))
    assert aggregate_loss(Lm, torch.zeros_like(m), "seq-mean-token-mean").item() == 0.0


def test_dual_clip_on_toy_case():
    """Dual clip bounds the loss of a negative-advantage token at -A * c; positive advantages are unchanged."""
    old = torch.zeros(1, 4, dtype=torch.float64)
    ratio = torch.tensor([[5.0, 2.0, 5.0, 0.5]], dtype=torch.float64)
    A = torch.tensor([[-1.0, -1.0, 1.0, -2.0]], dtype=torch.float64)
    m = torch.ones(1, 4)
    plain, pm = policy_loss(ratio.log(), old, A, m, agg="token-mean")
    dual, dm = policy_loss(ratio.log(), old, A, m, agg="token-mean", clip_ratio_c=3.0)
    # pg without dual clip: max(-A r, -A clip(r, .8, 1.2)) = [5, 2, -1.2, 1.6]; with c = 3: [3, 2, -1.2, 1.6]
    assert pm["pg_loss"] == pytest.approx((5 + 2 - 1.2 + 1.6) / 4)
    assert dm["pg_loss"] == pytest.approx((3 + 2 - 1.2 + 1.6) / 4)
    assert dm["clip/dual_frac"] == 0.25 and "clip/dual_frac" not in pm
    logp = ratio.log().requires_grad_(True)
    policy_loss(logp, old, A, m, agg="token-mean", clip_ratio_c=3.0)[0].backward()
    assert logp.grad[0, 0] == 0  # the dual-clipped token gets no gradient
    assert logp.grad[0, 1] == pytest.approx(2.0 / 4)  # d(-A r)/dlogp = -A r = 2, over 4 tokens


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(MODES), cuts=st.lists(st.integers(0, 8), max_size=4))
def test_pieces_with_the_batch_normaliser_add_up_to_the_batch_loss(seed, mode, cuts):
    """Micro-batches (of any sizes, some empty or short) and processes: each piece's loss with the whole
    batch's normaliser (the sum of the pieces' agg_normaliser), summed, is the loss of the whole batch,
    value and gradient (how the trainer accumulates, and what verl's global token count does)."""
    b = make(seed, garbage=False)
    B = b["mask"].shape[0]
    bounds = sorted({0, B, *[min(c, B) for c in cuts]})
    pieces = [torch.arange(lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    kw = dict(agg=mode, max_completion_length=b["mask"].shape[1])
    logp = b["logp"].clone().requires_grad_(True)
    whole, _ = policy_loss(logp, b["old_logp"], b["advantages"], b["mask"], **kw)
    (g_whole,) = torch.autograd.grad(whole, logp)
    norm = sum(agg_normaliser(b["mask"][i], mode) for i in pieces)
    total = 0.0
    for i in pieces:
        part, _ = policy_loss(logp[i], b["old_logp"][i], b["advantages"][i], b["mask"][i], normaliser=norm, **kw)
        total = total + part
    (g_parts,) = torch.autograd.grad(total, logp)
    assert float(total.detach()) == pytest.approx(float(whole.detach()), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(g_parts, g_whole, rtol=1e-10, atol=1e-12)


def test_agg_modes_declared_once():
    from spro.config import AlgorithmConfig

    choices = AlgorithmConfig.__dataclass_fields__["loss_agg"].metadata["choices"]
    assert choices == (None, *AGG_MODES) and "seq-mean-token-sum" in AGG_MODES


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), clip=st.sampled_from([(0.2, None), (0.2, 0.28), (0.1, 0.5), (0.0, 0.0)]),
       agg=st.sampled_from(MODES), kl_coef=st.sampled_from([0.0, 0.1]), kl_est=st.sampled_from(["k1", "k2", "k3"]),
       ent_coef=st.sampled_from([0.0, 0.01]), clip_c=st.sampled_from([None, 1.5, 3.0]))
def test_policy_loss_matches_loop(seed, clip, agg, kl_coef, kl_est, ent_coef, clip_c):
    b = make(seed)
    b["logp"] = b["old_logp"] + (b["logp"] - b["old_logp"]) * 4  # ratios far enough from 1 for the dual clip to act
    low, high = clip
    loss, metrics = policy_loss(
        b["logp"], b["old_logp"], b["advantages"], b["mask"], clip_eps_low=low, clip_eps_high=high, agg=agg,
        ref_logp=b["ref_logp"], kl_coef=kl_coef, kl_estimator=kl_est, entropy=b["entropy"], entropy_coef=ent_coef,
        clip_ratio_c=clip_c,
    )
    expect, em = ref_policy(b, low, low if high is None else high, agg, kl_coef, kl_est, ent_coef, clip_c=clip_c)
    assert loss.item() == pytest.approx(expect, rel=1e-10, abs=1e-12)
    assert set(metrics) == {"pg_loss", "clip/low_frac", "clip/high_frac", "approx_kl", "kl", "entropy"} | (
        set() if clip_c is None else {"clip/dual_frac"})
    for k, v in em.items():
        assert isinstance(metrics[k], float)
        assert metrics[k] == pytest.approx(v, rel=1e-10, abs=1e-12), k


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), clip=st.sampled_from([(0.2, None), (0.2, 0.28), (0.0003, 0.0004)]),
       agg=st.sampled_from(MODES), clip_c=st.sampled_from([None, 3.0]), kl_coef=st.sampled_from([0.0, 0.1]))
def test_sequence_level_ratio_matches_loop(seed, clip, agg, clip_c, kl_coef):
    """GSPO's sequence-level ratio (importance_sampling_level="sequence") against a plain loop."""
    b = make(seed)
    b["logp"] = b["old_logp"] + (b["logp"] - b["old_logp"]) * 4
    low, high = clip
    loss, metrics = policy_loss(
        b["logp"], b["old_logp"], b["advantages"], b["mask"], clip_eps_low=low, clip_eps_high=high, agg=agg,
        ref_logp=b["ref_logp"], kl_coef=kl_coef, entropy=b["entropy"], clip_ratio_c=clip_c,
        importance_sampling_level="sequence",
    )
    expect, em = ref_policy(b, low, low if high is None else high, agg, kl_coef, "k3", 0.0, clip_c=clip_c,
                            level="sequence")
    assert loss.item() == pytest.approx(expect, rel=1e-10, abs=1e-12)
    for k, v in em.items():
        assert metrics[k] == pytest.approx(v, rel=1e-10, abs=1e-12), k


def test_sequence_level_ratio_differs_from_token_level():
    """One response, log-ratios 0.5 and -0.5: per token one ratio is clipped; the sequence ratio is exp(0) = 1."""
    old = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    adv, mask = torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2)
    tok, mt = policy_loss(logp, old, adv, mask)
    seq, ms = policy_loss(logp, old, adv, mask, importance_sampling_level="sequence")
    assert tok.item() == pytest.approx(-(1.2 + math.exp(-0.5)) / 2) and mt["clip/high_frac"] == 0.5
    assert seq.item() == pytest.approx(-1.0) and ms["clip/high_frac"] == 0.0
    assert ms["approx_kl"] == pytest.approx(mt["approx_kl"])  # the token ratio's KL estimate in both
    with pytest.raises(ValueError, match="importance_sampling_level"):
        policy_loss(logp, old, adv, mask, importance_sampling_level="seq")


def test_policy_loss_optional_metrics_absent():
    b = make(1, garbage=False)
    _, metrics = policy_loss(b["logp"], b["old_logp"], b["advantages"], b["mask"])
    assert set(metrics) == {"pg_loss", "clip/low_frac", "clip/high_frac", "approx_kl"}


def test_clip_fractions_on_toy_case():
    old = torch.zeros(1, 4, dtype=torch.float64)
    logp = torch.log(torch.tensor([[0.5, 1.5, 1.25, 0.9]], dtype=torch.float64))
    A = torch.tensor([[-1.0, 1.0, 1.0, -1.0]], dtype=torch.float64)
    m = torch.ones(1, 4)
    _, met = policy_loss(logp, old, A, m, clip_eps_low=0.2, clip_eps_high=0.28)
    assert met["clip/low_frac"] == 0.25  # ratio .5 < .8 with A < 0
    assert met["clip/high_frac"] == 0.25  # ratio 1.5 > 1.28 with A > 0; 1.25 is inside
    # pg per token: max(-A r, -A clip(r)) -> [0.8, -1.28, -1.25, 0.9]
    assert met["pg_loss"] == pytest.approx((0.8 - 1.28 - 1.25 + 0.9) / 4)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), agg=st.sampled_from(MODES), high=st.sampled_from([None, 0.3]))
def test_policy_loss_gradient_matches_hand_derivation(seed, agg, high):
    b = make(seed, garbage=False)
    logp = b["logp"].clone().requires_grad_(True)
    loss, _ = policy_loss(logp, b["old_logp"], b["advantages"], b["mask"], clip_eps_high=high, agg=agg)
    loss.backward()
    hi = 0.2 if high is None else high
    m, lp, old, A = b["mask"].tolist(), b["logp"].tolist(), b["old_logp"].tolist(), b["advantages"].tolist()
    B, T = len(m), len(m[0])
    n_tok = sum(map(sum, m))
    n_seq = sum(1 for row in m if sum(row))
    expect = [[0.0] * T for _ in range(B)]
    for i in range(B):
        for t in range(T):
            if not m[i][t]:
                continue
            if agg == "token-mean":
                w = 1 / n_tok
            elif agg == "seq-mean-token-mean":
                w = 1 / (n_seq * sum(m[i]))
            elif agg == "seq-mean-token-sum":
                w = 1 / n_seq
            else:
                w = 1 / (B * T)
            r = math.exp(lp[i][t] - old[i][t])
            # d/dlogp of max(-A r, -A clip(r)): -A r where the unclipped branch is the max and
            # r is inside the clip range or on the side that does not bind, else 0
            unclipped_active = (A[i][t] >= 0 and r <= 1 + hi) or (A[i][t] < 0 and r >= 1 - 0.2)
            expect[i][t] = w * (-A[i][t] * r) if unclipped_active else 0.0
    torch.testing.assert_close(logp.grad, torch.tensor(expect, dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_policy_loss_gradcheck_with_kl_and_entropy():
    b = make(42, garbage=False)
    ent = b["entropy"].clone().requires_grad_(True)

    def f(logp, ent):
        loss, _ = policy_loss(logp, b["old_logp"], b["advantages"], b["mask"], ref_logp=b["ref_logp"],
                              kl_coef=0.3, kl_estimator="k3", entropy=ent, entropy_coef=0.05)
        return loss

    logp = b["logp"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (logp, ent))


def test_masked_garbage_does_not_reach_gradient():
    b = make(7)  # NaN at masked positions of old_logp, advantages, ref_logp, entropy
    logp = b["logp"].clone()
    logp[b["mask"] == 0] = float("-inf")
    logp.requires_grad_(True)
    loss, metrics = policy_loss(logp, b["old_logp"], b["advantages"], b["mask"], ref_logp=b["ref_logp"],
                                kl_coef=0.1, entropy=b["entropy"], entropy_coef=0.1)
    loss.backward()
    assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in metrics.values())
    assert bool(torch.isfinite(logp.grad).all())
    assert bool((logp.grad[b["mask"] == 0] == 0).all())


# ------------------------------------------------------------------ bad input


def _args():
    b = next(b for b in (make(s, garbage=False) for s in range(100)) if b["mask"].shape[1] >= 3)
    b["mask"][0] = 1
    return b


@pytest.mark.parametrize(
    "change, kw, match",
    [
        (lambda b: b.update(logp=b["logp"][:, :-1]), {}, r"logp has shape .* expected"),
        (lambda b: b.update(advantages=b["advantages"][0]), {}, r"advantages must be 2-D"),
        (lambda b: b["logp"].__setitem__((0, 0), float("nan")), {}, r"logp must be finite .*logp\[0, 0\] = nan"),
        (lambda b: b["advantages"].__setitem__((0, 0), float("inf")), {}, r"advantages must be finite"),
        (lambda b: b["mask"].__setitem__((0, 0), 0.5), {}, r"mask must contain only 0 and 1; found 0.5"),
        (lambda b: b.update(mask=b["mask"][:0]), {}, r"empty batch"),
        (lambda b: None, dict(clip_eps_low=-0.1), r"clip_eps_low must be >= 0"),
        (lambda b: None, dict(clip_eps_low=1.5), r"clip_eps_low must be < 1"),
        (lambda b: None, dict(clip_eps_high=float("nan")), r"clip_eps_high must be finite"),
        (lambda b: None, dict(agg="sum"), r"agg must be one of"),
        (lambda b: None, dict(kl_estimator="k4"), r"kl_estimator must be one of"),
        (lambda b: None, dict(kl_coef=0.1), r"kl_coef != 0 needs ref_logp"),
        (lambda b: None, dict(entropy_coef=0.1), r"entropy_coef != 0 needs entropy"),
        (lambda b: None, dict(agg="seq-mean-token-sum-norm", max_completion_length=1), r"smaller than the longest"),
        (lambda b: None, dict(agg="seq-mean-token-sum-norm", max_completion_length=0), r"positive int"),
        (lambda b: None, dict(clip_ratio_c=1.0), r"clip_ratio_c \(dual clip\) must be > 1"),
        (lambda b: None, dict(normaliser=float("nan")), r"normaliser must be a finite number"),
    ],
)
def test_policy_loss_bad_input(change, kw, match):
    b = _args()
    change(b)
    with pytest.raises(ValueError, match=match):
        policy_loss(b["logp"], b["old_logp"], b["advantages"], b["mask"], **kw)


def test_other_functions_bad_input():
    b = _args()
    with pytest.raises(ValueError, match=r"kind must be one of"):
        kl_penalty(b["logp"], b["ref_logp"], "kl")
    with pytest.raises(ValueError, match=r"logp has shape .* but ref_logp has"):
        kl_penalty(b["logp"], b["ref_logp"][:, :1], "k3")
    bad = b["ref_logp"].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"ref_logp must be finite"):
        kl_penalty(b["logp"], bad, "k3", mask=b["mask"])
    with pytest.raises(ValueError, match=r"mode must be one of"):
        aggregate_loss(b["logp"], b["mask"], "mean")
    with pytest.raises(ValueError, match=r"loss_mat has shape"):
        aggregate_loss(b["logp"][:, :1], b["mask"], "token-mean")
    with pytest.raises(ValueError, match=r"non-empty last"):
        entropy_from_logits(torch.zeros(2, 3, 0))
    with pytest.raises(ValueError, match=r"logits must be floating"):
        entropy_from_logits(torch.zeros(2, 3, 4, dtype=torch.long))

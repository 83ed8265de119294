"""spro.algorithms.core against slow, obviously-correct pure-Python loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spro.algorithms import AdvantageInputs, core, get_algorithm
from spro.algorithms.core import (
    cumulative_process_reward,
    masked_step_advantage,
    outcome_advantage,
    prime_advantage,
    rloo_advantage,
    spro_advantage,
)

BUILTINS = ("grpo", "dr_grpo", "rloo", "spro", "prime")

SETTINGS = settings(max_examples=60, deadline=None)
TOL = dict(rtol=1e-9, atol=1e-10)

# --------------------------------------------------------------------------------------------
# random ragged batches
# --------------------------------------------------------------------------------------------


def make_batch(seed: int, *, contiguous: bool | None = None, dtype=torch.float64, garbage=True):
    """Random batch: arbitrary non-contiguous integer group labels of unequal sizes, ragged
    masks with some empty rows, binary or real rewards, and (optionally) NaN/-inf garbage in
    the log-probs at masked positions (which must be ignored)."""
    rng = np.random.default_rng(seed)
    B = int(rng.integers(1, 13))
    T = int(rng.integers(1, 9))
    n_groups = int(rng.integers(1, B + 1))
    labels = rng.choice(np.arange(-50, 1000), size=n_groups, replace=False)
    group_ids = torch.tensor(rng.choice(labels, size=B), dtype=torch.int64)
    if contiguous is None:
        contiguous = bool(rng.integers(0, 2))
    if contiguous:
        lengths = rng.integers(0, T + 1, size=B)
        mask = torch.tensor(np.arange(T)[None, :] < lengths[:, None], dtype=torch.float64)
    else:
        mask = torch.tensor(rng.random((B, T)) < rng.uniform(0.3, 1.0), dtype=torch.float64)
        if rng.random() < 0.3:
            mask[int(rng.integers(0, B))] = 0.0
    if rng.random() < 0.5:
        rewards = torch.tensor(rng.integers(0, 2, size=B), dtype=dtype)
    else:
        rewards = torch.tensor(rng.normal(size=B) * 3, dtype=dtype)
    logp = torch.tensor(-np.abs(rng.normal(size=(B, T))) * 2, dtype=dtype)
    ref_logp = torch.tensor(-np.abs(rng.normal(size=(B, T))) * 2, dtype=dtype)
    prm_logp = torch.tensor(-np.abs(rng.normal(size=(B, T))) * 2, dtype=dtype)
    if garbage:
        bad = mask == 0
        logp[bad] = float("nan")
        ref_logp[bad] = float("-inf")
        prm_logp[bad] = float("inf")
    return dict(rewards=rewards, logp=logp, ref_logp=ref_logp, prm_logp=prm_logp, mask=mask, group_ids=group_ids)


def L(x):
    return x.tolist()


def run_algorithm(name, b, beta=None, **options):
    """The registered algorithm ``name`` on batch ``b`` (``beta``: SPRO's beta or PRIME's prm_beta)."""
    cls = get_algorithm(name)
    if beta is not None and name in ("spro", "prime"):
        options["beta" if name == "spro" else "prm_beta"] = beta
    x = AdvantageInputs(torch.as_tensor(b["rewards"]), torch.as_tensor(b["mask"]), b["group_ids"], b["logp"],
                        b["ref_logp"], extra={"prm_logp": b["prm_logp"]})
    return cls(cls.Options(**options)).advantages(x)


# --------------------------------------------------------------------------------------------
# loop references (pure Python, float64)
# --------------------------------------------------------------------------------------------


def ref_outcome(r, g, scale="group", eps=1e-6):
    out = []
    for i in range(len(r)):
        mem = [r[k] for k in range(len(r)) if g[k] == g[i]]
        n = len(mem)
        mean = sum(mem) / n
        if scale == "none":
            out.append(r[i] - mean)
        elif n == 1:
            out.append(0.0)
        else:
            std = math.sqrt(sum((x - mean) ** 2 for x in mem) / (n - 1))
            out.append((r[i] - mean) / (std + eps))
    return out


def ref_rloo(r, g):
    out = []
    for i in range(len(r)):
        others = [r[k] for k in range(len(r)) if g[k] == g[i] and k != i]
        out.append(r[i] - sum(others) / len(others) if others else 0.0)
    return out


def ref_p(logp, ref_logp, m, beta):
    B, T = len(m), len(m[0])
    return [[beta * (logp[i][t] - ref_logp[i][t]) if m[i][t] else 0.0 for t in range(T)] for i in range(B)]


def ref_cpr(logp, ref_logp, m, beta):
    p = ref_p(logp, ref_logp, m, beta)
    out = []
    for i in range(len(m)):
        row, acc = [], 0.0
        for t in range(len(m[0])):
            if m[i][t]:
                acc += p[i][t]
                row.append(acc)
            else:
                row.append(0.0)
        out.append(row)
    return out


def ref_msa(v, m, g, scale_std=False, eps=1e-6):
    B, T = len(m), len(m[0])
    out = [[0.0] * T for _ in range(B)]
    for i in range(B):
        for t in range(T):
            if not m[i][t]:
                continue
            vals = [v[k][t] for k in range(B) if g[k] == g[i] and m[k][t]]
            mean = sum(vals) / len(vals)
            a = v[i][t] - mean
            if scale_std:
                if len(vals) < 2:
                    a = 0.0
                else:
                    std = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1))
                    a = a / (std + eps)
            out[i][t] = a
    return out


def ref_pooled(v, m, g, scale_std=False, eps=1e-6):
    B, T = len(m), len(m[0])
    out = [[0.0] * T for _ in range(B)]
    for i in range(B):
        vals = [v[k][t] for k in range(B) for t in range(T) if g[k] == g[i] and m[k][t]]
        if not vals:
            continue
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1)) if len(vals) > 1 else None
        for t in range(T):
            if m[i][t]:
                a = v[i][t] - mean
                if scale_std:
                    a = 0.0 if std is None else a / (std + eps)
                out[i][t] = a
    return out


def row_mean(v, m, k):
    vals = [v[k][t] for t in range(len(m[0])) if m[k][t]]
    return sum(vals) / len(vals) if vals else None


def ref_pooled_loo(v, m, g):
    B, T = len(m), len(m[0])
    out = [[0.0] * T for _ in range(B)]
    for i in range(B):
        others = [row_mean(v, m, k) for k in range(B) if g[k] == g[i] and k != i and any(m[k])]
        if not others:
            continue
        base = sum(others) / len(others)
        for t in range(T):
            if m[i][t]:
                out[i][t] = v[i][t] - base
    return out


def ref_min_form(p, m, T):
    """PURE's min-form weighting: p[t] * softmax over the row's valid tokens of -p/T."""
    out = []
    for i in range(len(m)):
        valid = [t for t in range(len(m[0])) if m[i][t]]
        top = max((-p[i][t] / T for t in valid), default=0.0)
        z = sum(math.exp(-p[i][t] / T - top) for t in valid)
        out.append([p[i][t] * math.exp(-p[i][t] / T - top) / z if m[i][t] else 0.0 for t in range(len(m[0]))])
    return out


def ref_running_sum(p, m):
    out = []
    for i in range(len(m)):
        acc, row = 0.0, []
        for t in range(len(m[0])):
            acc += p[i][t] if m[i][t] else 0.0
            row.append(acc if m[i][t] else 0.0)
        out.append(row)
    return out


def ref_spro(b, beta, outcome_scale="group", msa_scale_std=False, eps=1e-6, process_reward="cumulative",
             baseline="masked_step", process_only=False, credit="sum", min_form_temperature=0.1,
             zero_variance_groups="keep", process_squash=None):
    r, g, m = L(b["rewards"]), L(b["group_ids"]), L(b["mask"])
    lp, rl = L(b["logp"]), L(b["ref_logp"])
    v = ref_p(lp, rl, m, beta)
    if credit == "min_form":
        v = ref_min_form(v, m, min_form_temperature)
    if process_reward == "cumulative":
        v = ref_running_sum(v, m)
    if baseline == "masked_step":
        proc = ref_msa(v, m, g, msa_scale_std, eps)
    elif baseline == "pooled":
        proc = ref_pooled(v, m, g, msa_scale_std, eps)
    else:
        proc = ref_pooled_loo(v, m, g)
    if process_squash is not None:
        proc = [[process_squash * math.tanh(x / process_squash) for x in row] for row in proc]
    if zero_variance_groups == "drop":
        same = [len({r[k] for k in range(len(r)) if g[k] == g[i]}) == 1 for i in range(len(r))]
        proc = [[0.0 if same[i] else x for x in proc[i]] for i in range(len(r))]
    a_out = [0.0] * len(r) if process_only else ref_outcome(r, g, outcome_scale, eps)
    return [[(a_out[i] + proc[i][t]) if m[i][t] else 0.0 for t in range(len(m[0]))] for i in range(len(r))]


def ref_prime(b, beta=0.05, outcome_coef=1.0, process_coef=1.0, process_baseline="others_mean",
              whiten=True, whiten_shift_mean=True, whiten_eps=1e-8, process_norm="none", credit="sum",
              min_form_temperature=0.1):
    r, g, m = L(b["rewards"]), L(b["group_ids"]), L(b["mask"])
    B, T = len(m), len(m[0])
    if process_norm == "batch_norm":  # PRIME's prime_norm: raw log-ratio / (max |reverse cumulative sum| + 1e-6)
        q = ref_p(L(b["prm_logp"]), L(b["ref_logp"]), m, 1.0)
        peak = max((abs(sum(q[i][s] for s in range(t, T))) for i in range(B) for t in range(T)), default=0.0)
        q = [[x / (peak + 1e-6) for x in row] for row in q]
    else:
        q = ref_p(L(b["prm_logp"]), L(b["ref_logp"]), m, beta)
    if credit == "min_form":
        q = ref_min_form(q, m, min_form_temperature)
    c = [[0.0] * T for _ in range(B)]
    for i in range(B):
        if process_baseline == "others_mean":
            others = [row_mean(q, m, k) for k in range(B) if g[k] == g[i] and k != i and any(m[k])]
            for t in range(T):
                if m[i][t] and others:
                    c[i][t] = process_coef * (q[i][t] - sum(others) / len(others))
        else:
            means = [row_mean(q, m, k) for k in range(B) if g[k] == g[i] and any(m[k])]
            n = len(means)
            for t in range(T):
                if m[i][t] and n > 1:
                    c[i][t] = process_coef * (q[i][t] * n / (n - 1) - sum(means) / (n - 1))
    a = ref_rloo(r, g)
    for i in range(B):
        valid = [t for t in range(T) if m[i][t]]
        if valid:
            c[i][valid[-1]] += outcome_coef * a[i]
    ret = [[0.0] * T for _ in range(B)]
    for i in range(B):
        acc = 0.0
        for t in reversed(range(T)):
            if m[i][t]:
                acc += c[i][t]
                ret[i][t] = acc
    if not whiten:
        return ret
    vals = [ret[i][t] for i in range(B) for t in range(T) if m[i][t]]
    n = len(vals)
    mean = sum(vals) / n if n else 0.0
    var = sum((x - mean) ** 2 for x in vals) / (n - 1) if n > 1 else 0.0
    out = [[0.0] * T for _ in range(B)]
    for i in range(B):
        for t in range(T):
            if m[i][t]:
                w = (ret[i][t] - mean) / math.sqrt(var + whiten_eps)
                out[i][t] = w if whiten_shift_mean else w + mean
    return out


def close(actual, expected, **tol):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), **(tol or TOL))


def masked_zero(out, mask):
    assert bool((out[mask == 0] == 0).all()), "masked positions must be exactly 0"


# --------------------------------------------------------------------------------------------
# each function against its loop reference
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from(["group", "none"]),
       eps=st.sampled_from([1e-6, 1e-3, 0.0]))
def test_outcome_advantage_matches_loop(seed, scale, eps):
    b = make_batch(seed)
    if eps == 0.0:
        b["rewards"] = b["rewards"] * 0.01 + torch.arange(len(b["rewards"]), dtype=torch.float64)  # distinct
    out = outcome_advantage(b["rewards"], b["group_ids"], scale=scale, eps=eps)
    assert out.shape == b["rewards"].shape and out.dtype == torch.float64
    close(out, ref_outcome(L(b["rewards"]), L(b["group_ids"]), scale, eps))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_rloo_advantage_matches_loop(seed):
    b = make_batch(seed)
    out = rloo_advantage(b["rewards"], b["group_ids"])
    close(out, ref_rloo(L(b["rewards"]), L(b["group_ids"])))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), beta=st.sampled_from([0.0, 0.05, 1.0, 3.5]))
def test_cumulative_process_reward_matches_loop(seed, beta):
    b = make_batch(seed)
    out = cumulative_process_reward(b["logp"], b["ref_logp"], b["mask"], beta)
    close(out, ref_cpr(L(b["logp"]), L(b["ref_logp"]), L(b["mask"]), beta))
    masked_zero(out, b["mask"])


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), scale_std=st.booleans())
def test_masked_step_advantage_matches_loop(seed, scale_std):
    b = make_batch(seed)
    cpr = torch.randn(b["mask"].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed % 9999))
    out = masked_step_advantage(cpr, b["mask"], b["group_ids"], scale_std=scale_std, eps=1e-6)
    close(out, ref_msa(L(cpr), L(b["mask"]), L(b["group_ids"]), scale_std, 1e-6), rtol=1e-8, atol=1e-9)
    masked_zero(out, b["mask"])


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), beta=st.sampled_from([0.0, 0.05, 0.5, 2.0]),
       outcome_scale=st.sampled_from(["group", "none"]), msa_scale_std=st.booleans(),
       process_reward=st.sampled_from(["cumulative", "per_token"]),
       baseline=st.sampled_from(["masked_step", "pooled", "pooled_loo"]), process_only=st.booleans(),
       credit=st.sampled_from(["sum", "min_form"]), temperature=st.sampled_from([0.1, 2.0]),
       zero_var=st.sampled_from(["keep", "drop"]), squash=st.sampled_from([None, 0.05, 1.0]))
def test_spro_advantage_matches_loop(seed, beta, outcome_scale, msa_scale_std, process_reward, baseline, process_only,
                                     credit, temperature, zero_var, squash):
    if baseline == "pooled_loo":
        msa_scale_std = False
    b = make_batch(seed)
    kw = dict(outcome_scale=outcome_scale, msa_scale_std=msa_scale_std, process_reward=process_reward,
              baseline=baseline, process_only=process_only, credit=credit, min_form_temperature=temperature,
              zero_variance_groups=zero_var, process_squash=squash)
    out = spro_advantage(b["rewards"], b["logp"], b["ref_logp"], b["mask"], b["group_ids"], beta=beta, **kw)
    assert out.shape == b["mask"].shape and out.dtype == torch.float64
    close(out, ref_spro(b, beta, **kw), rtol=1e-8, atol=1e-9)
    masked_zero(out, b["mask"])
    # the registered algorithm is the same computation
    est = run_algorithm("spro", b, beta, **kw)
    torch.testing.assert_close(est, out, rtol=0, atol=0)


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), beta=st.sampled_from([0.0, 0.05, 1.0]),
       coefs=st.sampled_from([(1.0, 1.0), (5.0, 5.0), (1.0, 0.0), (0.0, 2.0), (0.3, 1.7)]),
       process_baseline=st.sampled_from(["others_mean", "verl_recipe"]), whiten=st.booleans(),
       shift=st.booleans(), norm=st.sampled_from(["none", "batch_norm"]), credit=st.sampled_from(["sum", "min_form"]))
def test_prime_advantage_matches_loop(seed, beta, coefs, process_baseline, whiten, shift, norm, credit):
    b = make_batch(seed)
    kw = dict(beta=beta, outcome_coef=coefs[0], process_coef=coefs[1], process_baseline=process_baseline,
              whiten=whiten, whiten_shift_mean=shift, process_norm=norm, credit=credit)
    out = prime_advantage(b["rewards"], b["prm_logp"], b["ref_logp"], b["mask"], b["group_ids"], **kw)
    # whitening divides by sqrt(var + 1e-8): tiny variances amplify rounding, so compare relative
    close(out, ref_prime(b, **kw), rtol=1e-7, atol=1e-7)
    masked_zero(out, b["mask"])
    if whiten and shift and beta > 0:  # the prime algorithm runs the same computation
        est = run_algorithm("prime", b, beta, outcome_coef=coefs[0], process_coef=coefs[1], credit=credit,
                            process_baseline=process_baseline, process_norm=norm)
        torch.testing.assert_close(est, out, rtol=0, atol=0)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_outcome_estimators_broadcast_over_valid_tokens(seed):
    b = make_batch(seed)
    r, g, m = L(b["rewards"]), L(b["group_ids"]), L(b["mask"])
    T = len(m[0])
    expect = {
        "grpo": ref_outcome(r, g, "group"),
        "dr_grpo": ref_outcome(r, g, "none"),
        "rloo": ref_rloo(r, g),
    }
    for name, a in expect.items():
        out = run_algorithm(name, b, beta=0.1)
        close(out, [[a[i] if m[i][t] else 0.0 for t in range(T)] for i in range(len(r))])
        masked_zero(out, b["mask"])


# --------------------------------------------------------------------------------------------
# invariants
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), outcome_scale=st.sampled_from(["group", "none"]))
def test_spro_invariant_to_constant_added_to_group_rewards(seed, outcome_scale):
    b = make_batch(seed, garbage=False)
    base = spro_advantage(b["rewards"], b["logp"], b["ref_logp"], b["mask"], b["group_ids"], beta=0.2,
                          outcome_scale=outcome_scale)
    rng = np.random.default_rng(seed)
    uniq = torch.unique(b["group_ids"])
    shift = dict(zip(uniq.tolist(), rng.normal(size=len(uniq)) * 10))
    r2 = b["rewards"] + torch.tensor([shift[x] for x in L(b["group_ids"])], dtype=torch.float64)
    out = spro_advantage(r2, b["logp"], b["ref_logp"], b["mask"], b["group_ids"], beta=0.2, outcome_scale=outcome_scale)
    torch.testing.assert_close(out, base, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), c=st.floats(-5, 5), msa_scale_std=st.booleans())
def test_spro_invariant_to_constant_log_ratio_at_index_0(seed, c, msa_scale_std):
    b = make_batch(seed, contiguous=True, garbage=False)
    base = spro_advantage(b["rewards"], b["logp"], b["ref_logp"], b["mask"], b["group_ids"], beta=0.5,
                          msa_scale_std=msa_scale_std)
    logp = b["logp"].clone()
    logp[:, 0] += c  # every response's log-ratio at index 0 shifts by c
    out = spro_advantage(b["rewards"], logp, b["ref_logp"], b["mask"], b["group_ids"], beta=0.5,
                         msa_scale_std=msa_scale_std)
    torch.testing.assert_close(out, base, rtol=1e-6, atol=1e-7)


def test_lone_response_at_index_gets_zero_msa():
    # group 5: lengths 2, 4, 6 -> index 4, 5 have only the third response; group -3: one response
    mask = torch.zeros(4, 6)
    for i, n in enumerate([2, 4, 6, 3]):
        mask[i, :n] = 1
    group_ids = torch.tensor([5, 5, 5, -3])
    gen = torch.Generator().manual_seed(0)
    logp, ref_logp = -torch.rand(4, 6, generator=gen), -torch.rand(4, 6, generator=gen)
    cpr = cumulative_process_reward(logp, ref_logp, mask, 0.7)
    msa = masked_step_advantage(cpr, mask, group_ids)
    assert msa[2, 4] == 0 and msa[2, 5] == 0
    assert bool((msa[3] == 0).all())
    assert msa[2, 3] != 0 and msa[1, 3] != 0  # two responses share index 3
    assert float(msa[1, 3] + msa[2, 3]) == pytest.approx(0.0, abs=1e-7)
    # the full SPRO advantage there is just the outcome term
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    a = spro_advantage(rewards, logp, ref_logp, mask, group_ids, beta=0.7)
    a_out = outcome_advantage(rewards, group_ids)
    assert a[2, 4] == a_out[2] and a[2, 5] == a_out[2]
    assert bool((a[3, :3] == 0).all())  # lone group, lone index: 0 + 0


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_permutation_and_relabelling_equivariance(seed):
    b = make_batch(seed, garbage=False)
    B = b["mask"].shape[0]
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(seed % 10007))
    out = spro_advantage(b["rewards"], b["logp"], b["ref_logp"], b["mask"], b["group_ids"], beta=0.3)
    pb = {k: v[perm] for k, v in b.items()}
    pb["group_ids"] = pb["group_ids"] * 7 + 1000  # any injective relabelling
    out_p = spro_advantage(pb["rewards"], pb["logp"], pb["ref_logp"], pb["mask"], pb["group_ids"], beta=0.3)
    torch.testing.assert_close(out_p, out[perm], rtol=1e-12, atol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(["grpo", "dr_grpo", "rloo", "spro", "prime"]))
def test_float32_and_float64(seed, name):
    b64 = make_batch(seed, dtype=torch.float64, garbage=False)
    b32 = {k: (v.float() if v.is_floating_point() and k != "mask" else v) for k, v in b64.items()}
    o64 = run_algorithm(name, b64, beta=0.1)
    o32 = run_algorithm(name, b32, beta=0.1)
    assert o64.dtype == torch.float64 and o32.dtype == torch.float32
    torch.testing.assert_close(o32.double(), o64, rtol=1e-3, atol=2e-3)


def test_mask_dtypes_and_integer_rewards():
    b = make_batch(3, garbage=False)
    ref = _spro(b)
    for mask in (b["mask"].bool(), b["mask"].long(), b["mask"].float(), b["mask"].to(torch.uint8)):
        out = _spro({**b, "mask": mask})
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    r_int = (b["rewards"] > 0).long()
    out = outcome_advantage(r_int, b["group_ids"])
    assert out.dtype == torch.get_default_dtype()
    close(out.double(), ref_outcome([float(x) for x in L(r_int)], L(b["group_ids"])), rtol=1e-6, atol=1e-6)
    assert bool((outcome_advantage(torch.tensor([1.0]), torch.tensor([4])) == 0).all())


def test_zero_length_rows_and_all_empty():
    mask = torch.zeros(3, 4)
    out = spro_advantage(torch.tensor([1.0, 0.0, 1.0]), torch.zeros(3, 4), torch.zeros(3, 4), mask,
                         torch.tensor([0, 0, 1]), beta=0.1)
    assert bool((out == 0).all())
    out = prime_advantage(torch.tensor([1.0, 0.0, 1.0]), torch.zeros(3, 4), torch.zeros(3, 4), mask,
                          torch.tensor([0, 0, 1]))
    assert bool((out == 0).all())


def test_known_small_example():
    # group 0: responses a (len 2) and b (len 3); group 1: c alone. beta = 1, ref = 0.
    logp = torch.tensor([[0.1, 0.2, 9.0], [0.3, -0.1, 0.5], [1.0, 1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    rewards = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    out = spro_advantage(rewards, logp, torch.zeros_like(logp), mask, torch.tensor([0, 0, 1]), beta=1.0, eps=0.0)
    # A_out: a = +1/sqrt(0.5)/... : r = [1, 0], mean .5, unbiased std = sqrt(.5) -> +-0.7071
    # CPR a = [.1, .3], b = [.3, .2, .7]; MSA t0: a -.1, b +.1; t1: a +.05, b -.05; t2: b alone 0
    s = 0.5 / math.sqrt(0.5)
    expect = [[s - 0.1, s + 0.05, 0.0], [-s + 0.1, -s - 0.05, -s], [0.0, 0.0, 0.0]]
    close(out, expect, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def _good():
    b = make_batch(7, garbage=False)
    b["mask"][:, 0] = 1
    return b


def _spro(b, **kw):
    return spro_advantage(b["rewards"], b["logp"], b["ref_logp"], b["mask"], b["group_ids"], **{"beta": 0.1, **kw})


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda b: b.update(logp=b["logp"][:, :-1]), r"logp has shape .* but mask has shape"),
        (lambda b: b.update(ref_logp=b["ref_logp"][:1]), r"ref_logp has shape"),
        (lambda b: b.update(rewards=b["rewards"][:-1]), r"rewards has \d+ entries but mask has B"),
        (lambda b: b.update(group_ids=b["group_ids"][:-1]), r"group_ids has \d+ entries"),
        (lambda b: b["logp"].__setitem__((0, 0), float("nan")), r"logp must be finite .*logp\[0, 0\] = nan"),
        (lambda b: b["ref_logp"].__setitem__((0, 0), float("inf")), r"ref_logp must be finite .*\[0, 0\] = inf"),
        (lambda b: b["rewards"].__setitem__(0, float("nan")), r"rewards must be finite; rewards\[0\] = nan"),
        (lambda b: b["mask"].__setitem__((0, 0), 2.0), r"mask must contain only 0 and 1; found 2.0 at row 0"),
        (lambda b: b["mask"].__setitem__((0, 0), float("nan")), r"mask must contain only 0 and 1"),
        (lambda b: b.update(mask=b["mask"][0]), r"mask must be 2-D"),
        (lambda b: b.update(rewards=b["rewards"][:, None]), r"rewards must be 1-D"),
        (lambda b: b.update(group_ids=b["group_ids"].double()), r"group_ids must be an integer tensor"),
        (lambda b: b.update(group_ids=b["group_ids"][:, None]), r"group_ids must be 1-D"),
        (lambda b: b.update(logp=b["logp"].long()), r"logp must be a floating tensor"),
    ],
)
def test_bad_inputs_raise(change, match):
    b = _good()
    change(b)
    with pytest.raises(ValueError, match=match):
        _spro(b)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(beta=-0.1), r"beta must be >= 0, got -0.1"),
        (dict(beta=float("nan")), r"beta must be finite"),
        (dict(outcome_scale="std"), r"outcome_scale must be one of 'group', 'batch', 'none'; got 'std'"),
        (dict(process_reward="sum"), r"process_reward must be one of"),
        (dict(baseline="mean"), r"baseline must be one of"),
        (dict(baseline="pooled_loo", msa_scale_std=True), r"not supported with baseline='pooled_loo'"),
        (dict(eps=-1.0), r"eps must be >= 0"),
    ],
)
def test_bad_options_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        _spro(_good(), **kw)


def test_empty_batch_and_other_functions_validate():
    e1, e2 = torch.zeros(0), torch.zeros(0, 4)
    gi = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="empty batch"):
        outcome_advantage(e1, gi)
    with pytest.raises(ValueError, match="empty batch"):
        rloo_advantage(e1, gi)
    with pytest.raises(ValueError, match="empty batch"):
        spro_advantage(e1, e2, e2, e2, gi, beta=0.1)
    with pytest.raises(ValueError, match="empty batch"):
        prime_advantage(e1, e2, e2, e2, gi)
    with pytest.raises(ValueError, match="B >= 1"):
        run_algorithm("grpo", dict(rewards=e1, mask=e2, group_ids=gi, logp=e2, ref_logp=None, prm_logp=None))
    b = _good()
    with pytest.raises(ValueError, match=r"scale must be one of"):
        outcome_advantage(b["rewards"], b["group_ids"], scale="std")
    with pytest.raises(ValueError, match=r"beta must be >= 0"):
        cumulative_process_reward(b["logp"], b["ref_logp"], b["mask"], -1)
    with pytest.raises(ValueError, match=r"cpr must be finite.*cpr\[1, 0\]"):
        cpr = b["logp"].clone()
        cpr[1, 0] = float("inf")
        masked_step_advantage(cpr, b["mask"], b["group_ids"])
    with pytest.raises(ValueError, match=r"prm_logp must be finite"):
        p = b["prm_logp"].clone()
        p[0, 0] = float("nan")
        prime_advantage(b["rewards"], p, b["ref_logp"], b["mask"], b["group_ids"])
    with pytest.raises(ValueError, match=r"process_baseline must be one of"):
        prime_advantage(b["rewards"], b["prm_logp"], b["ref_logp"], b["mask"], b["group_ids"], process_baseline="x")
    with pytest.raises(ValueError, match=r"beta must be >= 0"):
        prime_advantage(b["rewards"], b["prm_logp"], b["ref_logp"], b["mask"], b["group_ids"], beta=-1)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), G=st.integers(1, 4), msa_scale_std=st.booleans(),
       process_only=st.booleans(), sort_labels=st.booleans())
def test_contiguous_equal_groups_fast_path_matches_loop(seed, n, G, msa_scale_std, process_only, sort_labels):
    """Groups laid out as consecutive equal blocks take a strided fast path: same results."""
    rng = np.random.default_rng(seed)
    T = int(rng.integers(1, 7))
    B = n * G
    labels = torch.tensor(rng.choice(np.arange(-9, 99), size=G, replace=False), dtype=torch.int64)
    if sort_labels:  # consecutive blocks in label order: the fast path
        labels = labels.sort().values
    b = dict(
        rewards=torch.tensor(rng.integers(0, 2, size=B), dtype=torch.float64),
        logp=torch.tensor(-np.abs(rng.normal(size=(B, T))), dtype=torch.float64),
        ref_logp=torch.tensor(-np.abs(rng.normal(size=(B, T))), dtype=torch.float64),
        mask=torch.tensor(rng.random((B, T)) < 0.7, dtype=torch.float64),
        group_ids=labels.repeat_interleave(n),
    )
    assert core._check_groups(b["group_ids"], B, torch.device("cpu")).block == (
        n if bool((labels[1:] > labels[:-1]).all()) or G == 1 else None
    )
    kw = dict(msa_scale_std=msa_scale_std, process_only=process_only)
    out = spro_advantage(b["rewards"], b["logp"], b["ref_logp"], b["mask"], b["group_ids"], beta=0.4, **kw)
    close(out, ref_spro(b, 0.4, **kw), rtol=1e-8, atol=1e-9)
    masked_zero(out, b["mask"])
    # the same batch with rows shuffled (general path) gives the same values
    perm = torch.from_numpy(rng.permutation(B))
    out_p = spro_advantage(b["rewards"][perm], b["logp"][perm], b["ref_logp"][perm], b["mask"][perm],
                           b["group_ids"][perm], beta=0.4, **kw)
    torch.testing.assert_close(out_p, out[perm], rtol=1e-10, atol=1e-12)


def test_mask_validation_paths():
    good = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    zeros = torch.zeros(2, 2)

    def cpr(m):
        return cumulative_process_reward(torch.zeros(m.shape), torch.zeros(m.shape), m, 0.1)

    for bad_value in (0.5, 2.0, -1.0, float("nan"), float("inf")):
        m = good.clone()
        m[1, 0] = bad_value
        with pytest.raises(ValueError, match=r"mask must contain only 0 and 1; found .* at row 1, token 0"):
            cpr(m)
    with pytest.raises(ValueError, match="only 0 and 1"):  # sum == sum of squares, but not 0/1
        cpr(torch.tensor([[0.5] * 8 + [2.0]]))
    with pytest.raises(ValueError, match="only 0 and 1"):  # non-contiguous float mask
        cpr(torch.tensor([[0.5, 1.0], [1.0, 1.0]]).T)
    with pytest.raises(ValueError, match="found 3 at row 0"):
        cpr(torch.tensor([[3, 0], [1, 1]]))
    out = spro_advantage(torch.tensor([1.0, 0.0]), zeros, zeros, good.T.contiguous().T, torch.zeros(2, dtype=torch.long),
                         beta=0.1)
    assert out[0, 1] == 0 and out[0, 0] > 0


def test_equal_rewards_and_eps_zero_give_zero_not_nan():
    r = torch.tensor([1.0, 1.0, 0.0, 3.0], dtype=torch.float64)
    g = torch.tensor([4, 4, 9, 9])
    out = outcome_advantage(r, g, eps=0.0)
    assert out[0] == 0 and out[1] == 0 and bool(torch.isfinite(out).all())
    # group 9: rewards 0, 3 -> mean 1.5, unbiased std sqrt(4.5)
    assert out[3].item() == pytest.approx(1.5 / math.sqrt(4.5)) and out[2].item() == pytest.approx(-1.5 / math.sqrt(4.5))
    cpr = torch.tensor([[1.0, 2.0], [1.0, 5.0]], dtype=torch.float64)
    msa = masked_step_advantage(cpr, torch.ones(2, 2), torch.tensor([0, 0]), scale_std=True, eps=0.0)
    assert msa[0, 0] == 0 and msa[1, 0] == 0
    assert msa[0, 1].item() == pytest.approx(-1 / math.sqrt(2)) and msa[1, 1].item() == pytest.approx(1 / math.sqrt(2))


def test_inputs_requiring_grad_are_detached_and_T_zero():
    b = make_batch(21, garbage=False)
    lp = b["logp"].clone().requires_grad_(True)
    for name in BUILTINS:
        out = run_algorithm(name, {**b, "logp": lp, "prm_logp": lp}, beta=0.1)
        assert not out.requires_grad and out.shape == b["mask"].shape
    B = 3
    empty = dict(rewards=torch.tensor([1.0, 0.0, 1.0]), mask=torch.zeros(B, 0), group_ids=torch.tensor([1, 1, 2]),
                 logp=torch.zeros(B, 0), ref_logp=torch.zeros(B, 0), prm_logp=torch.zeros(B, 0))
    for name in BUILTINS:
        assert run_algorithm(name, empty, beta=0.1).shape == (B, 0)


def test_plain_python_inputs_are_accepted():
    out = outcome_advantage([1, 0, 1, 1], [0, 0, 5, 5])
    assert out.dtype == torch.get_default_dtype()
    close(out.double(), ref_outcome([1.0, 0.0, 1.0, 1.0], [0, 0, 5, 5]), rtol=1e-6, atol=1e-6)
    close(rloo_advantage([True, False, True], [3, 3, 3]).double(), ref_rloo([1.0, 0.0, 1.0], [3, 3, 3]),
          rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# all-equal groups with rewards that are not 0/1 (issue 24): found by max == min, exactly 0 outcome
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.1, 0.7, 0.3, 1 / 3, 2.2, -0.9, 1e-3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_equal_groups_of_any_reward_value_and_size(value, dtype):
    """Groups whose responses all score `value` (a float whose group mean does not round back to it in
    float32 for many sizes) get exactly 0 outcome advantage from GRPO, Dr. GRPO and RLOO (also with
    eps = 0), and no process term from SPRO's zero_variance_groups=drop; mixed groups beside them keep
    theirs."""
    gen = torch.Generator().manual_seed(0)
    for G in range(2, 41):
        r = torch.cat([torch.full((G,), value, dtype=dtype), torch.tensor([value, value + 1.0], dtype=dtype)])
        g = torch.cat([torch.zeros(G, dtype=torch.long), torch.ones(2, dtype=torch.long)])
        for eps in (0.0, 1e-6):
            for scale in ("group", "none"):
                out = outcome_advantage(r, g, scale=scale, eps=eps)
                assert bool((out[:G] == 0).all()), (G, eps, scale, out[:G])
                assert out[G] < 0 < out[G + 1]
        loo = rloo_advantage(r, g)
        assert bool((loo[:G] == 0).all()) and loo[G] < 0 < loo[G + 1], (G, loo)
        T = 5
        lp = torch.randn(G + 2, T, generator=gen, dtype=dtype)
        ref = torch.randn(G + 2, T, generator=gen, dtype=dtype)
        mask = torch.ones(G + 2, T)
        drop = spro_advantage(r, lp, ref, mask, g, beta=0.5, eps=0.0, zero_variance_groups="drop")
        assert bool((drop[:G] == 0).all()), (G, drop[:G])  # neither a process term nor an outcome term
        keep = spro_advantage(r, lp, ref, mask, g, beta=0.5, eps=0.0)
        assert bool((keep[:G] != 0).any())  # with keep, the MSA still trains there
        close(drop[G:], keep[G:], rtol=0, atol=0)


def test_group_helpers_of_advantage_inputs():
    r = torch.tensor([0.7, 0.7, 0.7, 0.0, 1.0, 3.0])
    x = AdvantageInputs(r, torch.ones(6, 2, dtype=torch.bool), torch.tensor([5, 5, 5, 2, 2, 2]), torch.zeros(6, 2))
    assert x.group_size().tolist() == [3] * 6
    assert x.group_std(r)[:3].tolist() == [0.0] * 3  # all equal: exactly 0
    assert x.group_std(r)[3].item() == pytest.approx(float(torch.tensor([0.0, 1.0, 3.0]).std()))
    assert x.group_max(r).tolist() == pytest.approx([0.7, 0.7, 0.7, 3.0, 3.0, 3.0])
    assert x.group_min(r).tolist() == pytest.approx([0.7, 0.7, 0.7, 0.0, 0.0, 0.0])


def test_group_helpers_exported_for_plugins():
    from spro.algorithms import group_mean, group_size, group_std

    r = torch.tensor([1.0, 0.0, 0.1, 0.1, 0.1])
    g = torch.tensor([3, 3, 1, 1, 1])
    assert group_size(g).tolist() == [2, 2, 3, 3, 3]
    close(group_mean(r, g), torch.tensor([0.5, 0.5, 0.1, 0.1, 0.1]))
    assert group_std(r, g)[2:].tolist() == [0.0] * 3 and group_std(r, g)[0].item() == pytest.approx(2 ** -0.5)


@pytest.mark.parametrize("L", [10, 40, 100])
def test_min_form_scale_is_about_one_over_length(L):
    """At realistic settings (|p| << T) min-form's weights are near uniform: its process term is about
    1 / length of SPRO's cumulative one (docs/algorithms.md, "Scale")."""
    torch.manual_seed(0)
    B = 8
    lp, ref = torch.randn(B, L) * 0.5, torch.randn(B, L) * 0.5
    args = (torch.zeros(B), lp, ref, torch.ones(B, L), torch.zeros(B, dtype=torch.long))
    total = spro_advantage(*args, beta=0.01, process_only=True).abs().mean()
    mf = spro_advantage(*args, beta=0.01, process_only=True, credit="min_form").abs().mean()
    assert 0.8 / L < float(mf / total) < 1.2 / L

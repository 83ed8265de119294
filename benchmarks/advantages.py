"""Benchmark: SPRO vs GRPO advantage time, the pure-Python loop reference, and peak memory.

    python benchmarks/advantages.py [--B 1024] [--group 8] [--T 4096] [--repeats 25]

Batch: B responses in groups of ``--group``, ragged right-padded masks (lengths uniform in
[1, T]), float32 log-probs. Two layouts are timed: shuffled group labels (groups not
contiguous: the general ``index_add_`` path) and contiguous groups (how trainers lay out a
batch: the strided fast path).

* CPU, one torch thread by default (``--threads``), the same as the loop reference.
* GRPO and SPRO go through the algorithm registry (``get_algorithm("grpo" | "spro")``), input
  validation included; ``--repeats`` interleaved runs after a warm-up. Both the thread's CPU
  time (``time.thread_time``) and wall time are reported, best and median; the ratios use
  the best CPU times, which stay meaningful when other processes share the machine.
* Two pure-Python loop references, each timed on a subset of whole groups (the full batch
  would take very long) and extrapolated linearly in the number of responses:
  - the test suite's reference ``ref_spro`` (tests/algorithms/test_core.py), the "obviously
    correct" loop SPRO is checked against. It scans every row of the batch for the members
    of a group at each (row, token), so its cost grows faster than linearly in B and the
    linear extrapolation is a lower bound;
  - a tighter loop written here (groups precomputed, one pass over members per index).
  Both results on the subset are checked against the vectorised SPRO.
* Peak extra memory: resident-set high-water mark (VmHWM, reset through
  /proc/self/clear_refs) above the resident set before the call, measured for GRPO and SPRO
  at T/4, T/2 and T to show it grows linearly with B * T. This part runs in a child process
  with MALLOC_MMAP_THRESHOLD_ set so that freed tensors go back to the OS and are not silently
  reused (the timings run in the parent, with the normal allocator, as a trainer would).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import importlib.util
import subprocess

import torch

from spro.algorithms import AdvantageInputs, get_algorithm


def registered(name: str, **options):
    """fn(**batch) running the registered algorithm ``name`` as the trainer does (inputs checked)."""
    cls = get_algorithm(name)
    algo = cls(cls.Options(**options))

    def run(rewards, mask, group_ids, logp, ref_logp, **_):
        return algo.advantages(AdvantageInputs(rewards, mask, group_ids, logp, ref_logp))

    return run


def make_batch(B: int, group: int, T: int, seed: int = 0, shuffle: bool = True) -> dict:
    gen = torch.Generator().manual_seed(seed)
    group_ids = torch.arange(B // group).repeat_interleave(group) * 37 + 5
    perm = torch.randperm(B, generator=gen)
    if shuffle:
        group_ids = group_ids[perm]
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    rewards = torch.randint(0, 2, (B,), generator=gen).float()
    logp = -torch.rand(B, T, generator=gen) * 3
    ref_logp = -torch.rand(B, T, generator=gen) * 3
    return dict(rewards=rewards, mask=mask, group_ids=group_ids, logp=logp, ref_logp=ref_logp)


def loop_spro(rewards, logp, ref_logp, mask, group_ids, beta, eps=1e-6):
    """Plain-Python SPRO: outcome GRPO advantage + per-index masked group mean of the CPR."""
    r, lp, rl, m, g = (x.tolist() for x in (rewards, logp, ref_logp, mask, group_ids))
    B, T = len(m), len(m[0])
    groups: dict[int, list[int]] = {}
    for i in range(B):
        groups.setdefault(g[i], []).append(i)
    cpr = [[0.0] * T for _ in range(B)]
    for i in range(B):
        acc = 0.0
        for t in range(T):
            if m[i][t]:
                acc += beta * (lp[i][t] - rl[i][t])
                cpr[i][t] = acc
    out = [[0.0] * T for _ in range(B)]
    for members in groups.values():
        rs = [r[i] for i in members]
        mean = sum(rs) / len(rs)
        std = (sum((x - mean) ** 2 for x in rs) / (len(rs) - 1)) ** 0.5 if len(rs) > 1 else 0.0
        for t in range(T):
            valid = [i for i in members if m[i][t]]
            if not valid:
                continue
            base = sum(cpr[i][t] for i in valid) / len(valid)
            for i in valid:
                a_out = (r[i] - mean) / (std + eps) if len(rs) > 1 else 0.0
                out[i][t] = a_out + cpr[i][t] - base
    return out


def _load_test_reference():
    """tests/algorithms/test_core.py's ref_spro as fn(batch_dict, beta) -> nested list, or None."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "algorithms", "test_core.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("_spro_test_advantages", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError:  # pytest / hypothesis not installed
        return None
    return module.ref_spro


def time_interleaved(fns: dict, repeats: int) -> dict:
    """Run the functions in turn `repeats` times (after warm-up) so that load from other
    processes hits them alike. Returns {name: (cpu_best, cpu_median, wall_best, wall_median)}
    in seconds, where cpu = CPU time of this thread (time.thread_time: excludes the time the
    thread waits while other processes run; with one torch thread all work is on it)."""
    cpu: dict = {name: [] for name in fns}
    wall: dict = {name: [] for name in fns}
    for _ in range(2):
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, w0 = time.thread_time(), time.perf_counter()
            fn()
            cpu[name].append(time.thread_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    return {
        name: (min(cpu[name]), statistics.median(cpu[name]), min(wall[name]), statistics.median(wall[name]))
        for name in fns
    }


def _proc_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_extra_bytes(fn) -> int | None:
    """Resident high-water mark during fn() minus the resident set before it (Linux only)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _proc_kb("VmRSS")
    out = fn()
    peak = _proc_kb("VmHWM")
    del out
    if before is None or peak is None:
        return None
    return (peak - before) * 1024


def memory_table(args) -> int:
    B, G, T = args.B, args.group, args.T
    grpo, spro = registered("grpo"), registered("spro", beta=args.beta)
    print("peak extra resident memory during one call (VmHWM - VmRSS before):")
    print(f"{'T':>6} {'B*T':>10} {'GRPO MB':>9} {'SPRO MB':>9} {'SPRO / (B*T*4 bytes)':>22}")
    for t in (T // 4, T // 2, T):
        bb = make_batch(B, G, t, seed=1)
        m_grpo = peak_extra_bytes(lambda: grpo(**bb))
        m_spro = peak_extra_bytes(lambda: spro(**bb))
        if m_grpo is None or m_spro is None:
            print("  (not available: needs Linux /proc/self/clear_refs)")
            return 0
        unit = B * t * 4
        print(f"{t:>6} {B * t:>10} {m_grpo / 2**20:>9.1f} {m_spro / 2**20:>9.1f} {m_spro / unit:>22.2f}")
        del bb
    print("(a constant number of [B, T] float32 tensors: memory O(B * T))")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--B", type=int, default=1024)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--beta", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--loop-groups", type=int, default=8, help="groups timed for the tight loop")
    ap.add_argument("--test-loop-groups", type=int, default=2, help="groups timed for the test-suite loop")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1, like the single-threaded loop reference; 0 = torch default)")
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    B, G, T = args.B, args.group, args.T
    grpo, spro = registered("grpo"), registered("spro", beta=args.beta)
    if args.memory_only:
        return memory_table(args)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device cpu, float32")
    print(f"batch: B={B} responses in {B // G} groups of {G}, T={T}, ragged masks (lengths uniform in [1, T])")

    # loop references on subsets of whole groups, extrapolated linearly in B
    b = make_batch(B, G, T)
    print(f"valid tokens: {int(b['mask'].sum())} of {B * T}")
    loops = {}
    test_ref = _load_test_reference()
    candidates = [("tight loop written here", args.loop_groups, lambda sub: loop_spro(
        sub["rewards"], sub["logp"], sub["ref_logp"], sub["mask"], sub["group_ids"], args.beta))]
    if test_ref is not None:
        candidates.insert(0, ("test-suite loop reference ref_spro", args.test_loop_groups,
                              lambda sub: test_ref(sub, args.beta)))
    print()
    for name, n_groups, fn in candidates:
        uniq = torch.unique(b["group_ids"])[:n_groups]
        rows = torch.isin(b["group_ids"], uniq).nonzero().squeeze(1)
        sub = {k: v[rows] for k, v in b.items()}
        t0, w0 = time.thread_time(), time.perf_counter()
        ref = fn(sub)
        cpu, wall = time.thread_time() - t0, time.perf_counter() - w0
        vec = spro(**{k: v.double() if v.is_floating_point() else v for k, v in sub.items()})
        err = float((vec - torch.tensor(ref, dtype=torch.float64)).abs().max())
        loops[name] = cpu * B / len(rows)
        print(f"{name}: {cpu:.3f} s CPU ({wall:.3f} s wall) on {len(rows)} rows ({n_groups} groups)"
              f" -> {loops[name]:.2f} s CPU extrapolated linearly to B={B} (x{B / len(rows):.0f});"
              f" max |loop - vectorised| = {err:.1e} (float64)")
    t_loop = max(loops.values())
    t_tight = loops["tight loop written here"]

    worst = {"spro/grpo": 0.0, "loop/spro": float("inf"), "tight/spro": float("inf")}
    for layout, shuffle in (("contiguous groups, as trainers lay them out (strided fast path)", False),
                            ("shuffled group labels (general index_add_ path)", True)):
        b = make_batch(B, G, T, shuffle=shuffle)
        res = time_interleaved({"grpo": lambda: grpo(**b), "spro": lambda: spro(**b)},
                               args.repeats)
        t_grpo, med_grpo, wb_grpo, wm_grpo = res["grpo"]
        t_spro, med_spro, wb_spro, wm_spro = res["spro"]
        r1, r2, r3 = t_spro / t_grpo, t_loop / t_spro, t_tight / t_spro
        worst["spro/grpo"] = max(worst["spro/grpo"], r1)
        worst["loop/spro"] = min(worst["loop/spro"], r2)
        worst["tight/spro"] = min(worst["tight/spro"], r3)
        print()
        print(f"layout: {layout}")
        for name, (cb, cm, wb, wm) in (("GRPO", res["grpo"]), ("SPRO", res["spro"])):
            print(f"  {name} advantage (registry '{name.lower()}'): CPU {cb * 1e3:7.2f} ms best, {cm * 1e3:7.2f} ms median;"
                  f" wall {wb * 1e3:7.2f} ms best, {wm * 1e3:7.2f} ms median  ({args.repeats} runs)")
        print(f"  ratio SPRO / GRPO: {r1:6.2f}x  (median-based {med_spro / med_grpo:.2f}x)")
        print(f"  ratio loop / SPRO: {r2:6.0f}x  (median-based {t_loop / med_spro:.0f}x) for the test-suite reference;"
              f" {r3:.0f}x for the tight loop")
    print()
    print("ratios use best-of-N thread CPU times (other processes share this CPU); worst layout:")
    print(f"ratio SPRO / GRPO : {worst['spro/grpo']:6.2f}x  (target <= 5x)   "
          f"{'OK' if worst['spro/grpo'] <= 5 else 'MISSED'}")
    print(f"ratio loop / SPRO : {worst['loop/spro']:6.0f}x  (target >= 100x) "
          f"{'OK' if worst['loop/spro'] >= 100 else 'MISSED'}  (test-suite reference)")
    print(f"ratio tight loop / SPRO : {worst['tight/spro']:6.0f}x  "
          f"{'(>= 100x)' if worst['tight/spro'] >= 100 else '(below 100x)'}")
    print()
    sys.stdout.flush()
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    subprocess.run([sys.executable, __file__, "--memory-only", "--B", str(B), "--group", str(G), "--T", str(T),
                    "--beta", str(args.beta)], env=env, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

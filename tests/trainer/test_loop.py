"""The RL loop end to end on a very small random Llama (CPU, a few steps)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from safetensors.torch import load_file

from helpers import REWARDS, RecordingPRM, read_jsonl, save_small_model, small_overrides
from spro.config import ConfigError, load_config
from spro.models.logprobs import sequence_logps
from spro.rewards.scoring import RewardWarning
from spro.trainer import EVAL_KEYS, METRIC_KEYS, RewardFunctionError, Trainer, TrainingDivergedError, train


@pytest.mark.parametrize("algorithm", ["spro", "grpo", "dr_grpo", "rloo"])
def test_loop_changes_weights_and_logs_every_metric(model_dir, tmp_path, algorithm):
    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", algorithm))
    out = train(cfg, reward_funcs=REWARDS)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        missing = [k for k in METRIC_KEYS if k not in m]
        assert not missing, missing
        for k in METRIC_KEYS:  # a reference model is used by default: no metric is null
            assert m[k] is not None and math.isfinite(m[k]), (k, m[k])
        assert 0 < m["reward/std"] and m["groups/zero_variance_frac"] < 1
        assert m["length/min"] <= m["length/mean"] <= m["length/max"] <= 8
        assert m["lr"] == pytest.approx(1e-3)
        assert m["grad_norm"] > 0 and m["perf/tokens_per_sec"] > 0 and m["memory/peak_mb"] > 0
    # the second step is sampled from the updated policy: it has moved away from the reference
    assert metrics[1]["kl"] > 0
    if algorithm == "spro":
        assert metrics[1]["process/msa_abs_mean"] > 0 and metrics[1]["process/cpr_final_std"] > 0
    (ev,) = read_jsonl(out / "eval.jsonl")  # eval_every=0: once, at the end
    assert set(EVAL_KEYS) <= set(ev) and ev["step"] == 2 and ev["eval/n"] == 4
    # the final checkpoint holds weights different from the starting model
    start = load_file(str(model_dir / "model.safetensors"))
    end = load_file(str(out / "checkpoints" / "step-000002" / "model.safetensors"))
    assert any(not torch.equal(start[k], end[k]) for k in start)


def test_mini_batches_epochs_accumulation_tensorboard(model_dir, tmp_path, monkeypatch):
    import spro.trainer.loop as loop

    over = small_overrides(
        model_dir, tmp_path / "run", "spro", total_steps=1, **{
            "algorithm.ppo_epochs": 2, "algorithm.mini_batch_size": 4, "algorithm.grad_accum_steps": 2,
            "algorithm.kl_coef": 0.01, "algorithm.entropy_coef": 0.01, "algorithm.clip_eps_high": 0.28,
            "algorithm.clip_ratio_c": 3.0, "algorithm.loss_agg": "seq-mean-token-sum",
            "optim.warmup_steps": 2, "logging.tensorboard": True, "logging.log_completions": 2,
        })
    calls, real_loss = [], loop.policy_loss
    monkeypatch.setattr(loop, "policy_loss", lambda *a, **kw: calls.append(kw) or real_loss(*a, **kw))
    t = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
    out = t.train()
    assert len(calls) == 2 * 2 * 2  # epochs x mini-batches x micro-batches
    assert all(kw["clip_ratio_c"] == 3.0 and kw["agg"] == "seq-mean-token-sum" for kw in calls)
    assert all(float(kw["normaliser"]) == 4 for kw in calls)  # the mini-batch's 4 responses (non-empty)
    (m,) = read_jsonl(out / "metrics.jsonl")
    assert m["lr"] == pytest.approx(0.0)  # first optimizer step of a 2-step warmup
    assert t.scheduler.get_last_lr()[0] == pytest.approx(1e-3)  # after 4 optimizer steps
    assert list((out / "tensorboard").iterdir())
    assert len(read_jsonl(out / "completions.jsonl")) == 2


def test_sequence_logps_match_unpadded_rows(model_dir):
    """Batched log-probs with left-padded prompts equal those of each row alone."""
    from spro.models.loading import load_model_and_tokenizer
    from spro.rollout import HFGenerateBackend

    model, tok = load_model_and_tokenizer(model_dir)
    torch.manual_seed(0)
    backend = HFGenerateBackend(model, tok, max_new_tokens=6)
    batch = backend.generate(["Q:1+2=", "Q:12+34+5="], 3)
    assert batch.prompt_ids.shape[0] == 6 and batch.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    # generation from a once-per-prompt pre-filled cache samples the same tokens as plain generate
    torch.manual_seed(0)
    plain_batch = HFGenerateBackend(model, tok, max_new_tokens=6, share_prompt_prefix=False).generate(
        ["Q:1+2=", "Q:12+34+5="], 3)
    assert torch.equal(plain_batch.completion_ids, batch.completion_ids)
    assert torch.equal(plain_batch.prompt_ids, batch.prompt_ids)
    with torch.no_grad():
        lp, ent = sequence_logps(model, batch, temperature=0.7, with_entropy=True)
        for i in range(6):
            p = batch.prompt_ids[i][batch.prompt_mask[i].bool()]
            n = int(batch.completion_mask[i].sum())
            c = batch.completion_ids[i, :n]
            logits = model(torch.cat([p, c]).unsqueeze(0)).logits[0, len(p) - 1 : -1] / 0.7
            ref = logits.log_softmax(-1).gather(-1, c.unsqueeze(-1)).squeeze(-1)
            torch.testing.assert_close(lp[i, :n], ref, atol=1e-5, rtol=1e-5)
    assert ent.shape == lp.shape and bool((ent[batch.completion_mask.bool()] > 0).all())
    # prefix sharing (each group's prompt run once, its KV cache repeated) gives the same values
    # and the same gradients as the plain pass
    mask = batch.completion_mask.bool()
    model.zero_grad()
    plain, plain_ent = sequence_logps(model, batch, temperature=0.7, with_entropy=True)
    plain.masked_fill(~mask, 0).sum().backward()
    g_plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    shared, shared_ent = sequence_logps(model, batch, temperature=0.7, with_entropy=True, group_size=3)
    shared.masked_fill(~mask, 0).sum().backward()
    torch.testing.assert_close(shared[mask], plain[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_ent[mask], plain_ent[mask], atol=1e-5, rtol=1e-5)
    for gp, p in zip(g_plain, model.parameters()):
        torch.testing.assert_close(p.grad, gp, atol=1e-5, rtol=1e-4)
    # the mask covers tokens up to and including the first eos; truncated = no eos
    for i in range(6):
        ids = batch.completion_ids[i].tolist()
        has_eos = tok.eos_token_id in ids
        assert bool(batch.truncated[i]) == (not has_eos)


def test_spro_costs_no_extra_forward_pass(model_dir, tmp_path):
    """SPRO's process reward reuses the log-probs GRPO computes anyway: same number of passes."""
    calls = {}
    for alg in ("grpo", "spro"):
        t = Trainer(load_config(overrides=small_overrides(model_dir, tmp_path / alg, alg, total_steps=1)),
                    reward_funcs=REWARDS)
        n = [0]
        for m in (t.model, t.ref):
            m.register_forward_hook(lambda *a, n=n: n.__setitem__(0, n[0] + 1))
        t.train_step()
        calls[alg] = n[0]
    assert calls["spro"] == calls["grpo"]


# ------------------------------------------------------------------------------------ bad input


def test_unknown_algorithm_and_key_suggest_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'grpo'"):
        load_config(overrides=["algorithm.name=grpoo"])
    with pytest.raises(ConfigError, match="did you mean 'rollout.num_generations'"):
        load_config(overrides=["rollout.num_generation=4"])


def test_wrong_type_and_group_divisibility():
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        load_config(overrides=["optim.lr=fast"])
    with pytest.raises(ConfigError, match="divisible by the group size"):
        load_config(overrides=["rollout.num_generations=4", "algorithm.mini_batch_size=6"])


def test_prompts_longer_than_context(tmp_path):
    short = save_small_model(tmp_path / "short", max_position_embeddings=16)
    knobs = {"data.task_kwargs": "{value_range: [10, 99]}"}  # prompts of 11-17 characters
    cfg = load_config(overrides=small_overrides(short, tmp_path / "run", **{"rollout.max_new_tokens": 8, **knobs}))
    with pytest.raises(ConfigError, match=r"row \d+: the prompt has \d+ tokens.*context of 16"):
        Trainer(cfg, reward_funcs=REWARDS)
    cfg = load_config(overrides=small_overrides(short, tmp_path / "run", **{"rollout.max_new_tokens": 4,
                                                                          "data.long_prompts": "drop", **knobs}))
    with pytest.warns(UserWarning, match="dropping"):
        t = Trainer(cfg, reward_funcs=REWARDS)
    assert t.train_prompts and all(len(p) <= 12 for p in t.train_prompts) and len(t.train_prompts) < 32


def _run_with_reward(model_dir, tmp_path, fn):
    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", total_steps=1))
    return train(cfg, reward_funcs={"digits": fn})


def test_reward_that_raises_everywhere_names_the_function(model_dir, tmp_path):
    def broken(prompts, completions, **kw):
        raise KeyError("no such column")

    with pytest.raises(RewardFunctionError, match="'digits' raised on every response.*KeyError"):
        _run_with_reward(model_dir, tmp_path, broken)


def test_reward_errors_on_some_responses_are_counted(model_dir, tmp_path):
    seen = []

    def flaky(prompts, completions, **kw):
        if len(completions) > 1:
            raise RuntimeError("batch failed")
        seen.append(1)
        if len(seen) % 2:
            raise RuntimeError("this one failed")
        return [1.0]

    with pytest.warns(RewardWarning, match=r"reward 'digits': 4 of 8 responses \(50%\).*First error: .*batch failed"):
        out = _run_with_reward(model_dir, tmp_path, flaky)
    (m,) = read_jsonl(out / "metrics.jsonl")
    assert m["reward/errors"] == 4 and m["reward/none_frac"] == 0.5


def test_a_reward_that_never_returns_is_timed_out_and_reported(model_dir, tmp_path):
    import threading

    release = threading.Event()

    def stuck(prompts, completions, **kw):
        release.wait()
        return [1.0] * len(completions)

    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", total_steps=1,
                                                **{"data.reward_timeout": 0.2, "eval_every": -1}))
    try:
        with pytest.warns(RewardWarning, match=r"'digits'.*8 timed out.*did not return within 0.2 s"):
            out = train(cfg, reward_funcs={"digits": stuck})
    finally:
        release.set()
    (m,) = read_jsonl(out / "metrics.jsonl")
    assert m["reward/timeouts"] == 8 and m["reward/none_frac"] == 1.0


@pytest.mark.parametrize("bad, match", [
    (lambda prompts, completions, **kw: "1.0", "returned str"),
    (lambda prompts, completions, **kw: [1.0] * (len(completions) + 1), r"returned 9 values for 8 completions"),
    (lambda prompts, completions, **kw: ["high"] * len(completions), "expected float or None"),
])
def test_reward_with_wrong_type_or_count(model_dir, tmp_path, bad, match):
    with pytest.raises(RewardFunctionError, match=match):
        _run_with_reward(model_dir, tmp_path, bad)


def test_nan_in_logprobs_stops_and_keeps_last_checkpoint(model_dir, tmp_path, monkeypatch):
    import spro.models.logprobs as lp_mod
    import spro.trainer.loop as tr

    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", total_steps=3, save_every=1))
    real = lp_mod.sequence_logps
    calls = [0]

    def poisoned(model, batch, **kw):
        lp, ent = real(model, batch, **kw)
        calls[0] += 1
        if calls[0] > 3:  # step 1 uses 3 passes (policy, reference, update); then NaN
            lp = torch.full_like(lp, float("nan"))
        return lp, ent

    monkeypatch.setattr(tr, "sequence_logps", poisoned)  # the training pass
    monkeypatch.setattr(lp_mod, "sequence_logps", poisoned)  # the no-grad passes
    with pytest.raises(TrainingDivergedError, match=r"step 2: non-finite values in the sampling policy's log-probs.*step-000001"):
        train(cfg, reward_funcs=REWARDS)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-000001"]
    assert [m["step"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1]


def test_nan_loss_stops(model_dir, tmp_path, monkeypatch):
    import spro.trainer.loop as tr

    real = tr.policy_loss

    def nan_loss(*a, **kw):
        loss, m = real(*a, **kw)
        return loss * float("nan"), m

    monkeypatch.setattr(tr, "policy_loss", nan_loss)
    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", total_steps=1))
    with pytest.raises(TrainingDivergedError, match="non-finite values in the loss.*no checkpoint was saved yet"):
        train(cfg, reward_funcs=REWARDS)


def test_cli_train_runs_and_reports_errors(model_dir, tmp_path, capsys):
    from spro.cli import main

    over = small_overrides(model_dir, tmp_path / "run", total_steps=1, **{"data.rewards": "[{name: arithmetic}]"})
    assert main(["train", *over]) == 0
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    assert main(["train", "algorithm.nme=spro"]) == 2
    assert "did you mean 'algorithm.name'" in capsys.readouterr().err


def test_process_reward_model_hook_for_prime(model_dir, tmp_path):
    """algorithm.name=prime calls prm.compute_logp(batch) and prm.update(batch, rewards) each step."""

    from spro.models.loading import load_model_and_tokenizer

    prm = RecordingPRM(load_model_and_tokenizer(model_dir)[0])
    # the digits reward never reaches correct_threshold, so PRIME's accuracy filter would drop every prompt
    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", "prime", **{"algorithm.prime.filter": False}))
    out = train(cfg, prm=prm, reward_funcs=REWARDS)
    assert [(n, shape) for n, shape, _ in prm.calls] == [(8, (8,)), (8, (8,))]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert all(m["prm/loss"] == 0.5 for m in metrics) and all(k in metrics[0] for k in METRIC_KEYS)


# ------------------------------------------------------------------------------ the update's loss


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_accumulated_gradient_is_the_gradient_of_the_mini_batch_loss(model_dir, tmp_path, agg):
    """With grad_accum_steps=2 and 6 of 8 responses kept (as PRIME's filter does), the micro-batches hold 4 and
    2 responses: the accumulated gradient must be that of the loss over all 6, whatever the aggregation."""
    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", "grpo", total_steps=1, **{
        "algorithm.grad_accum_steps": 2, "algorithm.loss_agg": agg, "optim.max_grad_norm": 0}))
    t = Trainer(cfg, reward_funcs=REWARDS)
    keep = torch.tensor([True] * 6 + [False] * 2)
    t.algorithm.select = lambda x: keep
    seen, grads = {}, {}
    real_update = t.ppo_update
    t.ppo_update = lambda s, adv, step: seen.update(s=s, adv=adv) or real_update(s, adv, step)
    t.optimizer.step = lambda *a, **k: grads.update({n: p.grad.clone() for n, p in t.model.named_parameters()})
    t.train_step()
    s, adv = seen["s"], seen["adv"]
    assert len(s.batch) == 6 and t.micro == 4
    t.model.zero_grad()
    logp, _ = sequence_logps(t.model, s.batch, temperature=cfg.rollout.temperature)
    from spro.algorithms.losses import policy_loss

    loss, _ = policy_loss(logp, s.x.logp, adv, s.x.mask, agg=agg, max_completion_length=cfg.rollout.max_new_tokens)
    loss.backward()
    for n, p in t.model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-7, msg=n)


# ------------------------------------------------------------------------------ dropout and exactness


def _model_with_dropout(path):
    from spro.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(save_small_model(path))
    model.config.attention_dropout = 0.1  # applied inside the attention function when training
    model.save_pretrained(str(path))
    return path


@pytest.mark.parametrize("dropout", [False, True], ids=["no-dropout", "attention_dropout=0.1"])
@pytest.mark.parametrize("extra", [{}, {"algorithm.grad_accum_steps": 2}, {"model.share_prompt_prefix": False}],
                         ids=["on-policy", "accumulation", "no-prefix-sharing"])
def test_process_reward_is_exactly_zero_at_step_1(model_dir, tmp_path, dropout, extra):
    """At step 1 the policy is the reference: log pi_old - log pi_ref, SPRO's process reward and the KL are exactly 0
    (no dropout in the pi_old pass; the same kernels in both passes: with 8 prompts a frozen reference rounded
    differently, giving ~1e-9 without dropout)."""
    model = _model_with_dropout(tmp_path / "model") if dropout else model_dir
    cfg = load_config(overrides=small_overrides(model, tmp_path / "run", "spro", total_steps=1,
                                                **{"rollout.prompts_per_step": 8, **extra}))
    t = Trainer(cfg, reward_funcs=REWARDS)
    m = t.train_step()
    for k in ("process/cpr_final_mean", "process/cpr_final_std", "process/msa_abs_mean", "process/reward_abs_mean",
              "kl"):
        assert m[k] == 0.0, (k, m[k])


def test_sampling_and_no_grad_passes_run_without_dropout(tmp_path):
    """Every forward pass of the policy without gradients (sampling, pi_old, evaluation) runs in eval mode; the
    update's passes (with gradients) in train mode."""
    model = _model_with_dropout(tmp_path / "model")
    for extra in ({}, {"algorithm.grad_accum_steps": 2}):
        cfg = load_config(overrides=small_overrides(model, tmp_path / f"run{len(extra)}", "spro", total_steps=1,
                                                    **extra))
        t = Trainer(cfg, reward_funcs=REWARDS)
        assert not t.on_policy  # a dropout pass cannot double as pi_old
        seen = []
        t.model.register_forward_hook(lambda mod, *a: seen.append((torch.is_grad_enabled(), mod.training)))
        t.train()
        assert {training for grad, training in seen if not grad} == {False}
        assert {training for grad, training in seen if grad} == {True}


# ------------------------------------------------------------------------------ what is trained on


def test_cli_trains_on_the_data_source_with_its_reward_and_a_held_out_set(model_dir, tmp_path, capsys):
    """`spro train data.source=FILE data.schema=gsm8k` trains on the file (not on the default task), scores with the
    reward gsm8k implies (math), says so, and evaluates on rows it does not train on or stops with an error."""
    import json

    from spro.cli import main

    data = tmp_path / "my.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i}+{i}?", "answer": f"#### {2 * i}"}) + "\n" for i in range(12)))
    base = small_overrides(model_dir, tmp_path / "run", "grpo", total_steps=1, **{
        "data.task": "null", "data.rewards": "null", "data.source": str(data), "data.schema": "gsm8k",
        "logging.log_completions": 8})
    assert main(["train", *base]) == 1
    assert "no held-out set for the evaluation" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert main(["train", *base, "data.eval_fraction=0.25"]) == 0
    err = capsys.readouterr().err
    assert "spro: data " in err and "9 prompts; 3 held out by data.eval_fraction=0.25" in err
    assert "reward math (what gsm8k data implies" in err
    trained = {r["prompt"] for r in read_jsonl(tmp_path / "run" / "completions.jsonl")}
    assert trained and trained <= {f"{i}+{i}?" for i in range(12)}
    (ev,) = read_jsonl(tmp_path / "run" / "eval.jsonl")
    assert ev["eval/n"] == 3


def test_spro_reference_refreshed_from_the_policy(model_dir, tmp_path):
    """algorithm.spro.ref_refresh_every=1: a step's process reward is computed against the copy as it is,
    then the copy takes the policy that sampled the step (so step 2 still measures against the start and
    its process term is not 0, step 3 against the policy of step 2); the copy is saved with checkpoints,
    the trainer's own reference stays frozen, and the process probes measure against the copy."""
    over = small_overrides(model_dir, tmp_path / "run", "spro", total_steps=3,
                           **{"algorithm.spro.ref_refresh_every": 1})
    t = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
    seen, probes = [], []
    real, real_probe = t.algorithm.prepare, t.process_probe

    def spy(batch, x):
        before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
        x = real(batch, x)
        now = all(torch.equal(before[n], p) for n, p in t.algorithm.process_ref.named_parameters())
        seen.append((x.step, now, torch.equal(x.extra["process_ref_logp"], x.ref_logp)))
        return x

    def spy_probe(full, trained):
        probe = real_probe(full, trained)
        probes.append((probe, full.x))
        return probe

    t.algorithm.prepare, t.process_probe = spy, spy_probe
    out = t.train()
    assert seen == [(1, True, True), (2, True, True), (3, True, False)]
    for probe, x in probes:  # the probe is SPRO's own signal, against the copy that trains
        assert torch.equal(probe.logratio, x.logp - x.extra["process_ref_logp"])
    metrics = read_jsonl(out / "metrics.jsonl")
    assert metrics[1]["process/msa_abs_mean"] > 0  # the refresh comes after step 2's process reward
    start = load_file(str(model_dir / "model.safetensors"))
    assert all(torch.equal(start[k].float(), p.detach().float()) for k, p in t.ref.state_dict().items() if k in start)
    assert (out / "checkpoints" / "step-000003" / "algorithm" / "process_ref.safetensors").is_file()


def test_a_code_reward_checks_its_sandbox_at_the_start_and_logs_it(model_dir, tmp_path, monkeypatch, capsys):
    """Issue 20 item 5: a run with a code reward resolves data.code.isolation when the trainer is built (a weaker
    mode than bwrap warns then, before any reward call) and logs it every step as sandbox/isolation."""
    from spro.rewards import sandbox

    if not sandbox._probe()["namespace"]:
        pytest.skip("the namespace sandbox is not available here")
    monkeypatch.setattr(sandbox, "_WARNED", set())
    calls = []
    monkeypatch.setattr(sandbox, "run_python", lambda *a, **k: calls.append(a))  # (no program may run yet)
    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", total_steps=1, **{
        "eval_every": -1, "data.rewards": "[{name: digits}, {name: code, weight: 0.0}]",
        "data.code.isolation": "namespace"}))
    with pytest.warns(RuntimeWarning, match="weaker 'namespace' isolation"):
        trainer = Trainer(cfg, reward_funcs=REWARDS)
    trainer.close()
    assert not calls and "code rewards run model-written programs in the namespace sandbox" in capsys.readouterr().err
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = train(cfg, reward_funcs=REWARDS)
    (m,) = read_jsonl(out / "metrics.jsonl")
    assert m["sandbox/isolation"] == 1.0  # 0 bwrap, 1 namespace, 2 none
    assert "sandbox.isolation: namespace" in (out / "train.log").read_text().splitlines()
    plain = train(load_config(overrides=small_overrides(model_dir, tmp_path / "plain", total_steps=1, eval_every=-1)),
                  reward_funcs=REWARDS)
    assert "sandbox/isolation" not in read_jsonl(plain / "metrics.jsonl")[0]  # no code reward: nothing to record
    assert "sandbox" not in (plain / "train.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu_is_an_error_not_a_cpu_run(model_dir, tmp_path):
    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", device="cuda"))
    with pytest.raises(ConfigError, match="device=cuda: torch sees no CUDA GPU here"):
        train(cfg, reward_funcs=REWARDS)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()

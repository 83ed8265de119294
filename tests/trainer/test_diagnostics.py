"""Process-reward diagnostics (spro.trainer.diagnostics) against hand-computed values, and in the loop."""

from __future__ import annotations


import pytest
import torch

from helpers import read_jsonl, small_overrides
from spro.config import load_config
from spro.data.tasks import get_task
from spro.trainer import train
from spro.trainer.diagnostics import ProcessDiagnostics, first_error_sums, token_steps


def test_first_error_sums_by_hand():
    # response 0: 3 steps, first wrong step 1; step scores -1, -5, 2 -> argmin 1 (hit), step 1 < step 0 (1 pair won)
    # response 1: 4 steps, first wrong 2; scores 0, -3, -1, 0 -> argmin 1 (miss); step 2 vs 0: won, vs 1: lost
    # response 2: right (first wrong -1): ignored; response 3: first wrong 3 but only 3 steps: ignored
    steps = torch.tensor([[0, 0, 1, 2, -1], [0, 1, 2, 3, 3], [0, 1, 2, -1, -1], [0, 1, 2, -1, -1]])
    signal = torch.tensor([[-0.5, -0.5, -5.0, 2.0, 9.0], [0.0, -3.0, -1.0, 0.5, -0.5], [1.0, 1, 1, 0, 0],
                           [1.0, 1, 1, 0, 0]])
    out = first_error_sums(signal, steps, torch.tensor([1, 2, -1, 3]), torch.tensor([3, 4, 3, 3]))
    assert out.tolist() == [1.0, 2.0, 1 / 3 + 1 / 4, 2.0, 3.0]


def test_token_steps_follow_the_step_spans(char_tokenizer):
    task = get_task("arithmetic")
    texts = ["1+2=3;3+4=7;A:7", "1+2=4;A:4"]
    ids = [char_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    T = max(map(len, ids))
    comp = torch.tensor([i + [char_tokenizer.pad_token_id] * (T - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids])
    steps = token_steps(char_tokenizer, comp, mask, [task.step_spans(t) for t in texts])
    assert steps[0].tolist() == [0] * 5 + [-1] + [1] * 5 + [-1] + [2] * 3
    assert steps[1, :9].tolist() == [0] * 5 + [-1] + [1] * 3 and bool((steps[1, 9:] == -1).all())


def test_a_signal_that_dips_at_the_first_error_scores_perfectly(char_tokenizer):
    """A signal of -1 on the tokens of each wrong response's first wrong step: top-1 = AUROC = 1."""
    from types import SimpleNamespace

    from spro.rollout import RolloutBatch

    task = get_task("arithmetic_long")
    probs = task.problems("train", 6)
    comps = []
    for k, p in enumerate(probs):  # break step k % 4 of each solution
        segs = p["solution"].split(";")
        j = k % 4
        a, b = segs[j].split("=")
        segs[j] = f"{a}={int(b) + 1}"
        comps.append(";".join(segs))
    ids = [char_tokenizer(c, add_special_tokens=False)["input_ids"] for c in comps]
    T = max(map(len, ids))
    comp = torch.tensor([i + [0] * (T - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids])
    B = len(comps)
    batch = RolloutBatch(torch.zeros(B, 1, dtype=torch.long), torch.ones(B, 1, dtype=torch.long), comp, mask,
                         torch.zeros(B, dtype=torch.bool), torch.arange(B) // 2, [p["prompt"] for p in probs], comps)
    diag = ProcessDiagnostics(task, char_tokenizer)
    steps, first, n = diag._steps(batch, torch.zeros(B, dtype=torch.bool))
    assert first.tolist() == [k % 4 for k in range(B)]
    signal = torch.where(steps == first[:, None], -1.0, 0.0)
    out = first_error_sums(signal, steps, first, n)
    assert out[0] == out[1] == B and out[3] == out[4] == sum(k % 4 for k in range(B))
    # in the loop's form: the metrics of a (fake) step whose advantage is that signal
    x = SimpleNamespace(mask=mask.bool(), logp=torch.zeros(B, T), ref_logp=None, rewards=torch.zeros(B),
                        correct=torch.zeros(B, dtype=torch.bool), group_ids=batch.group_ids, extra={})
    full = SimpleNamespace(x=x, batch=batch)
    acc = SimpleNamespace(reduce=lambda t, op: t, device="cpu")
    m = diag(acc, full, full, torch.arange(B), signal, None)  # no process probe (no reference)
    assert m["diag/advantage/first_error_top1"] == 1.0 and m["diag/advantage/first_error_auroc"] == 1.0
    assert m["diag/first_error_top1_chance"] is None  # no self-guided reward without a reference
    assert "diag/self_reward/first_error_top1" not in m


@pytest.mark.parametrize("algorithm", ["grpo", "prime"])
def test_the_loop_logs_diagnostics_for_every_algorithm(model_dir, tmp_path, algorithm):
    over = small_overrides(model_dir, tmp_path / "run", algorithm, total_steps=1,
                           **{"data.rewards": "[{name: arithmetic}]", "algorithm.prime.filter": False})
    (m,) = read_jsonl(train(load_config(overrides=over)) / "metrics.jsonl")
    # a random model gets nearly every answer wrong: the self-guided reward is scored on wrong responses
    assert m["diag/self_reward/n"] > 0 and 0 < m["diag/first_error_top1_chance"] <= 1
    for sig in ("self_reward", "msa", "advantage") + (("prm",) if algorithm == "prime" else ()):
        top1, auroc = m[f"diag/{sig}/first_error_top1"], m[f"diag/{sig}/first_error_auroc"]
        assert 0 <= top1 <= 1 and (auroc is None or 0 <= auroc <= 1), sig
    assert ("diag/prm/first_error_top1" in m) == (algorithm == "prime")
    assert m["drift/msa_logratio_corr"] is None or -1 <= m["drift/msa_logratio_corr"] <= 1
    share = m["drift/zero_var_adv_share"]  # None when every advantage is 0 (all groups without variance)
    assert share is None or 0 <= share <= 1


def test_first_error_diagnostics_read_the_task_prompt_behind_the_chat_template(model_dir, tmp_path):
    """With data.chat_template=on the model sees the prompt through the template; the step checker still
    gets the task's prompt, so wrong responses are located (before: every rendered prompt failed to parse
    and the diag/* metrics had no responses)."""
    over = small_overrides(model_dir, tmp_path / "run", "grpo", total_steps=1,
                           **{"data.rewards": "[{name: arithmetic}]", "data.chat_template": "on"})
    run = train(load_config(overrides=over))
    (m,) = read_jsonl(run / "metrics.jsonl")
    assert m["diag/self_reward/n"] > 0 and 0 < m["diag/first_error_top1_chance"] <= 1
    # the checkpoint records it, so data.chat_template=auto (spro eval, spro diagnose, a next run) renders alike
    from spro.data.prompts import resolve_chat_template
    from spro.models.tiny import build_char_tokenizer

    ckpt = next((run / "checkpoints").glob("step-*"))
    chat, why = resolve_chat_template("auto", build_char_tokenizer(), str(ckpt))
    assert chat is True and "(spro train trained it so)" in why, why


def test_ties_share_the_top1_hit():
    steps = torch.tensor([[0, 1, 2, 3]])
    flat = torch.zeros(1, 4)  # every step scores 0: a tie of four, the first wrong step among them
    out = first_error_sums(flat, steps, torch.tensor([2]), torch.tensor([4]))
    assert out[0] == 0.25 and out[2] == 0.25 and out[3] == 1.0 and out[4] == 2  # AUROC: ties count half


def test_diagnose_command_on_a_tiny_model(model_dir, tmp_path):
    import json

    from spro.cli import main

    out = tmp_path / "d.json"
    assert main(["diagnose", "--model", str(model_dir), "--ref", str(model_dir), "--task", "arithmetic", "--n", "4",
                 "--k", "2", "--max-new-tokens", "12", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["signals"]) == {"self_reward", "msa", "policy_logp", "random"}
    sr = result["signals"]["self_reward"]
    # the model against itself: the self-guided reward is 0 everywhere, so top-1 is exactly chance
    assert sr["n"] > 0 and abs(sr["top1"] - sr["top1_chance"]) < 1e-9


def test_diagnose_command_with_the_chat_template_and_task_knobs(model_dir, tmp_path, capsys):
    import json

    from spro.cli import main

    out = tmp_path / "d.json"
    assert main(["diagnose", "--model", str(model_dir), "--ref", str(model_dir), "--task", "arithmetic", "--n", "4",
                 "--k", "2", "--max-new-tokens", "12", "--chat-template", "on", "--task-knob", "value_range=[10,99]",
                 "--out", str(out)]) == 0
    assert "prompts through the chat template (--chat-template=on)" in capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["chat_template"] is True and result["signals"]["self_reward"]["n"] > 0
    assert main(["diagnose", "--model", str(model_dir), "--ref", str(model_dir), "--task-knob", "value_range"]) == 2
    assert "--task-knob expects KEY=VALUE" in capsys.readouterr().err

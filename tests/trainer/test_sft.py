"""Supervised warm start: loss goes down, masking, checkpoint, errors, CLI, warm-start cache."""

from __future__ import annotations

import json
import os
import re
import threading

import pytest

from spro.trainer.sft import SFTConfig, collate, encode_example, get_preset, sft
from spro.models.tiny import build_char_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=128)
TASK = {"num_operands": (2, 3), "value_range": (0, 9), "train_size": 300, "validation_size": 20, "test_size": 20}


def tiny_config(**kw):
    base = dict(task_kwargs=dict(TASK), steps=40, batch_size=16, lr=1e-2, warmup_steps=5, eval_every=20, eval_n=8,
                max_new_tokens=16, **TINY)
    base.update(kw)
    return SFTConfig(**base)


def test_collate_masks_prompt_and_padding():
    tok = build_char_tokenizer()
    ex = [encode_example(tok, "Q:1+2=", "1+2=3;A:3"), encode_example(tok, "Q:10+2=", "10+2=12;A:12")]
    ids, att, lab = collate(ex, tok.pad_token_id)
    assert ids.shape == att.shape == lab.shape == (2, len("Q:10+2=") + len("10+2=12;A:12") + 1)
    # Row 0: prompt masked, completion + eos supervised, then padding masked.
    p0 = len("Q:1+2=")
    c0 = tok("1+2=3;A:3", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert (lab[0, :p0] == -100).all()
    assert lab[0, p0 : p0 + len(c0)].tolist() == c0
    assert (lab[0, p0 + len(c0) :] == -100).all()
    assert (ids[0, p0 + len(c0) :] == tok.pad_token_id).all()
    assert att[0].sum() == p0 + len(c0) and att[1].all()


def test_short_sft_lowers_loss_and_saves(tmp_path):
    out = tmp_path / "model"
    result = sft(tiny_config(), out, progress=False)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert len(result.losses) == 40
    assert [v["step"] for v in result.validation] == [20, 40]
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in result.validation)
    # HF checkpoint that reloads offline and has the run's config and log.
    from spro.models.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(out)
    meta = json.loads((out / "sft_config.json").read_text())
    assert meta["steps"] == 40 and meta["task_kwargs_resolved"]["value_range"] == [0, 9]
    # the CPU kernels behind the build (a float32 SFT lands elsewhere on another CPU)
    import torch

    assert meta["machine"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert {"cpu", "vendor", "flags", "mkl_enable_instructions"} <= set(meta["machine"])
    log = [json.loads(line) for line in (out / "sft_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log if "loss" in r] == pytest.approx(result.losses)
    assert not [p for p in tmp_path.iterdir() if p.name != "model"]  # temp folder renamed away


def test_sft_continues_from_a_saved_model(tmp_path):
    first = sft(tiny_config(steps=10, eval_every=0), tmp_path / "a", progress=False)
    second = sft(tiny_config(steps=3, eval_every=0, model=str(tmp_path / "a")), tmp_path / "b", progress=False)
    # Starting from the trained weights, the loss starts where the first run ended, not at ~log(V).
    assert second.losses[0] < first.losses[0]


def test_bad_model_folder_and_bad_config(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        sft(tiny_config(model=str(tmp_path / "missing")), None, progress=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config"):
        sft(tiny_config(model=str(tmp_path / "junk")), None, progress=False)
    with pytest.raises(ValueError, match="steps"):
        SFTConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        SFTConfig(lr=-1.0)
    with pytest.raises(ValueError, match="preset"):
        get_preset("medium")


def test_sft_cli(tmp_path, capsys):
    from spro.cli import main

    out = tmp_path / "cli_model"
    rc = main(["sft", "--output", str(out), "--steps", "3", "--batch-size", "8", "--eval-n", "4", "--no-progress",
               "--task-knob", "train_size=100", "--task-knob", "value_range=[0,9]"])
    assert rc == 0
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()
    # no bar: the held-out evaluation (at the end here) still shows, as a line
    assert re.search(r"^step 3/3: loss [\d.]+, held-out accuracy [\d.]+ \(n=4\)", capsys.readouterr().out, re.M)
    rc = main(["sft", "--output", str(tmp_path / "x"), "--steps", "2", "--task-knob", "num_operands=0", "--no-progress"])
    assert rc == 2
    assert "num_operands" in capsys.readouterr().err


def test_warm_start_cache_builds_once_under_concurrency(tmp_path, monkeypatch):
    import spro.trainer.sft
    import spro.trainer.warmstart

    monkeypatch.setitem(spro.trainer.sft.PRESETS, "weak", tiny_config(steps=5, eval_every=0, eval_n=4))
    monkeypatch.delitem(spro.trainer.warmstart.PRESET_BANDS, "weak")  # a 5-step model is far below the band
    calls = []
    real_sft = spro.trainer.sft.sft

    def counting_sft(*a, **kw):
        calls.append(1)
        return real_sft(*a, **kw)

    monkeypatch.setattr(spro.trainer.sft, "sft", counting_sft)
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(spro.trainer.warmstart.warm_start("weak", tmp_path, progress=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(paths)) == 1 and len(paths) == 3
    path = paths[0]
    assert (path / "config.json").is_file() and path.parent == tmp_path
    assert spro.trainer.warmstart.warm_start("weak", tmp_path) == path and len(calls) == 1
    # A different config is a different cache entry.
    monkeypatch.setitem(spro.trainer.sft.PRESETS, "weak", tiny_config(steps=6, eval_every=0, eval_n=4))
    other = spro.trainer.warmstart.warm_start("weak", tmp_path, progress=False)
    assert other != path and len(calls) == 2
    with pytest.raises(ValueError, match="preset"):
        spro.trainer.warmstart.warm_start("medium", tmp_path)


def test_warm_start_outside_its_band_is_said(tmp_path, monkeypatch):
    """A preset build whose validation accuracy left the band it is meant for (the SFT depends on the CPU's
    kernels: long-mid gave 0.44, 0.33 and 0.095 on three) warns with the accuracy, the band and what to do;
    one inside its band, a preset without a band and a folder without a log say nothing."""
    import warnings

    from spro.trainer import warmstart

    def build(acc):
        folder = tmp_path / f"b{acc}"
        folder.mkdir()
        (folder / "sft_log.jsonl").write_text(json.dumps({"step": 10, "loss": 1.0}) + "\n"
                                              + json.dumps({"step": 860, "val/accuracy": acc, "val/n": 200}) + "\n")
        return folder

    with pytest.warns(UserWarning) as record:
        warmstart.check_band("long-mid", build(0.095))
    text = str(record[0].message)
    assert "accuracy 0.095" in text and "0.20-0.50" in text and "spro sft --preset long-mid steps=N" in text, text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warmstart.check_band("long-mid", build(0.44))
        warmstart.check_band("strong", build(0.01))  # no band
        warmstart.check_band("long-mid", tmp_path)  # no sft_log.jsonl
    assert warmstart.built_accuracy(build(0.33)) == 0.33
    # warm_start checks every folder it returns, cached or built
    monkeypatch.setattr(warmstart, "cache_key", lambda preset: "k")
    folder = tmp_path / "cache" / "long-mid-k"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sft_log.jsonl").write_text(json.dumps({"step": 860, "val/accuracy": 0.9}) + "\n")
    with pytest.warns(UserWarning, match="accuracy 0.900"):
        assert warmstart.warm_start("long-mid", tmp_path / "cache") == folder


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    from spro.trainer.warmstart import default_cache_dir

    monkeypatch.setenv("SPRO_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "warmstart"


@pytest.mark.slow
def test_weak_preset_accuracy_band(tmp_path):
    """The weak preset lands in its band on this CPU: its SFT validation accuracy inside PRESET_BANDS["weak"] and
    greedy test accuracy in 20-65% (slow: a full warm start). The build depends on the CPU's kernels: on the first
    500 test problems 0.494 on a Xeon with AVX-512 and 0.584 with MKL limited to AVX2 on the same Xeon (so the
    earlier upper bound, 0.5, failed on AVX2 kernels; docs/results.md, section 1)."""
    from spro.experiments.evaluation import evaluate
    from spro.models.loading import load_model_and_tokenizer
    from spro.data.tasks import get_task
    from spro.trainer.warmstart import PRESET_BANDS, built_accuracy, warm_start

    path = warm_start("weak")
    low, high, _ = PRESET_BANDS["weak"]
    assert low <= built_accuracy(path) <= high
    model, tok = load_model_and_tokenizer(path)
    task = get_task("arithmetic")
    r = evaluate(model, tok, task.split("test", n=500), task.reward)
    assert 0.2 <= r["pass@1"] <= 0.65, r["pass@1"]


def test_sft_records_its_prompt_rendering_and_auto_follows_it(tmp_path):
    """A warm start trained on prompts through the chat template is trained and evaluated on them by
    data.chat_template=auto, whatever its folder is called (and one trained on plain prompts on plain ones)."""
    from spro.data.prompts import render_prompt, resolve_chat_template

    tok = build_char_tokenizer()
    assert tok.chat_template  # the tiny tokenizer has one: its name alone would say off
    templated = encode_example(tok, "Q:1+2=", "1+2=3;A:3", chat_template=True)[0]
    assert tok.decode(templated) == render_prompt(tok, "Q:1+2=", chat_template=True) != "Q:1+2="
    for mode, applied in (("on", True), ("auto", False)):
        out = tmp_path / f"model-{mode}"
        result = sft(tiny_config(steps=2, eval_every=0, eval_n=4, chat_template=mode), out, progress=False)
        assert result.validation[0]["n"] == 4
        assert json.loads((out / "sft_config.json").read_text())["chat_template_applied"] is applied
        chat, why = resolve_chat_template("auto", tok, str(out))
        assert chat is applied and "(spro sft trained it so)" in why, why
        assert resolve_chat_template("off", tok, str(out))[0] is False  # explicit settings win
    with pytest.raises(ValueError, match="chat_template must be auto, on or off"):
        tiny_config(chat_template="yes")


def test_warm_start_cache_key_ignores_unset_new_fields(monkeypatch):
    """Adding an SFT field with its default must not change the cached warm starts' key (a rebuild of every
    cache); setting it must."""
    import dataclasses

    from spro.trainer import sft as sft_mod
    from spro.trainer.warmstart import cache_key

    before = cache_key("weak")
    monkeypatch.setitem(sft_mod.PRESETS, "weak", dataclasses.replace(sft_mod.PRESETS["weak"], chat_template="on"))
    assert cache_key("weak") != before
    monkeypatch.setitem(sft_mod.PRESETS, "weak", dataclasses.replace(sft_mod.PRESETS["weak"], chat_template="auto"))
    assert cache_key("weak") == before


def test_sft_cli_takes_chat_template_on_and_off(tmp_path):
    """YAML reads on / off as booleans: chat_template=on|off and --chat-template on|off all work."""
    from spro.cli import main

    small = ["--steps", "1", "--eval-n", "2", "--max-new-tokens", "4", "--no-progress", "hidden_size=32",
             "num_layers=1", "num_heads=2", "intermediate_size=64", "batch_size=4"]
    for i, args in enumerate((["chat_template=on"], ["--chat-template", "on"], ["chat_template=off"])):
        out = tmp_path / f"m{i}"
        assert main(["sft", "-o", str(out), *small, *args]) == 0, args
        applied = json.loads((out / "sft_config.json").read_text())["chat_template_applied"]
        assert applied is (args[-1].endswith("on")), args


def test_spro_export_carries_the_rendering_record(tmp_path):
    """An exported warm start keeps how it was trained: auto still renders through the template, whatever the
    new folder is called."""
    from spro.cli import main
    from spro.data.prompts import PROMPTS_RECORD, resolve_chat_template

    src, out = tmp_path / "sft", tmp_path / "exported"
    sft(tiny_config(steps=1, eval_every=0, eval_n=2, chat_template="on"), src, progress=False)
    assert main(["export", "--model", str(src), "--output", str(out)]) == 0
    assert json.loads((out / PROMPTS_RECORD).read_text())["chat_template_applied"] is True
    chat, why = resolve_chat_template("auto", build_char_tokenizer(), str(out))
    assert chat is True and "recorded from the model it was saved from" in why, why


def test_validation_renders_string_prompts_as_training_does(monkeypatch):
    """SFT's held-out accuracy sees the prompts the way the model was fine-tuned on them: through the chat
    template (as a user message) when it is applied, as they are otherwise; chat messages stay messages."""
    from datasets import Dataset

    import spro.rollout
    from spro.trainer.sft import validation_accuracy

    seen = []

    def fake_generate(model, tokenizer, prompts, **kw):
        seen.append(list(prompts))
        return [["4"] for _ in prompts], [[1] for _ in prompts], [[False] for _ in prompts]

    monkeypatch.setattr(spro.rollout, "generate_completions", fake_generate)
    msgs = [{"role": "user", "content": "1+1="}]
    data = Dataset.from_list([{"prompt": "2+2=", "answer": "4"}, {"prompt": "3+1=", "answer": "4"}])
    reward = lambda completions, answer, **kw: [float(c == a) for c, a in zip(completions, answer)]  # noqa: E731
    out = validation_accuracy(None, None, data, reward, 8, chat_template=True)
    assert seen[-1] == [[{"role": "user", "content": "2+2="}], [{"role": "user", "content": "3+1="}]]
    assert out["accuracy"] == 1.0 and out["n"] == 2
    validation_accuracy(None, None, data, reward, 8, chat_template=False)
    assert seen[-1] == ["2+2=", "3+1="]
    chat = Dataset.from_list([{"prompt": msgs, "answer": "2"}])
    validation_accuracy(None, None, chat, reward, 8, chat_template=True)
    assert seen[-1] == [msgs]

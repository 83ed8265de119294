"""data.chat_template: string prompts through the tokenizer's chat template (auto / on / off)."""

from __future__ import annotations

import shutil

import pytest

from spro.config import ConfigError, load_config
from spro.data.prompts import names_chat_model, render_prompt, resolve_chat_template


def test_the_auto_rule(char_tokenizer):
    assert names_chat_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert names_chat_model("meta-llama/Llama-2-7b-chat-hf") and names_chat_model("google/gemma-2-2b-it")
    assert names_chat_model("/models/smollm2-135m-instruct-q8_0.gguf")
    for base in ("HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B", "warmstart:weak", "tiny", "runs/edit-model", None):
        assert names_chat_model(base) is None, base
    on, why = resolve_chat_template("auto", char_tokenizer, "runs/x", "SmolLM2-135M-Instruct-Q8_0.gguf")
    assert on and "names a chat model" in why
    assert resolve_chat_template("auto", char_tokenizer, "HuggingFaceTB/SmolLM2-135M")[0] is False
    assert resolve_chat_template(True, char_tokenizer)[0] and not resolve_chat_template("off", char_tokenizer, "x-it")[0]


def test_on_without_a_template_is_an_error(char_tokenizer):
    import copy

    bare = copy.deepcopy(char_tokenizer)
    bare.chat_template = None
    with pytest.raises(ConfigError, match="data.chat_template=on: the model's tokenizer has no chat template"):
        resolve_chat_template("on", bare)
    assert resolve_chat_template("auto", bare, "SmolLM2-135M-Instruct") == (
        False, "data.chat_template=auto: the tokenizer has no chat template; data.chat_template=on applies it")
    with pytest.raises(ConfigError, match="data.chat_template.*auto, on or off"):
        load_config(overrides=["data.chat_template=maybe"])


def test_render(char_tokenizer):
    chat = render_prompt(char_tokenizer, "1+2=", chat_template=True)
    assert chat == render_prompt(char_tokenizer, [{"role": "user", "content": "1+2="}]) != "1+2="
    assert render_prompt(char_tokenizer, "1+2=") == "1+2="


@pytest.mark.parametrize("mode,named,expect", [("on", "small", True), ("auto", "small", False),
                                               ("auto", "small-Instruct", True), ("off", "small-Instruct", False)])
def test_the_trainer_renders_and_prints_the_first_prompt(model_dir, tmp_path, capsys, mode, named, expect):
    from helpers import REWARDS, small_overrides

    from spro.trainer import Trainer

    folder = tmp_path / named
    shutil.copytree(model_dir, folder)
    over = small_overrides(folder, tmp_path / "run", **{"data.chat_template": mode, "eval_every": 0})
    t = Trainer(load_config(overrides=over), reward_funcs=REWARDS)
    try:
        raw = t.train_ds[0]["prompt"]
        templated = render_prompt(t.tok, raw, chat_template=True)
        assert t.train_prompts[0] == (templated if expect else raw)
        assert t.eval_prompts[0] == render_prompt(t.tok, t.eval_ds[0]["prompt"], chat_template=expect)
        err = capsys.readouterr().err
        said = "through the chat template" if expect else "used as they are"
        assert f"spro: string prompts {said} (data.chat_template={mode}" in err
        assert f"first prompt: {t.train_prompts[0]!r}" in err
        rows, batch = t.rollout()
        assert batch.prompts[0] == t.train_prompts[rows[0]]
        if expect:
            assert t.evaluate()["eval/n"] == 4  # generated from the rendered evaluation prompts
    finally:
        t.close()


def test_spro_eval_follows_the_runs_setting_and_the_flag(model_dir, tmp_path, capsys):
    import json

    from helpers import REWARDS, small_overrides

    from spro.cli import main
    from spro.trainer import train

    folder = tmp_path / "small-Instruct"
    shutil.copytree(model_dir, folder)
    run = train(load_config(overrides=small_overrides(folder, tmp_path / "run", total_steps=1)), reward_funcs=REWARDS)
    args = ["eval", "--model", str(run), "--task", "arithmetic", "--n", "2", "--max-new-tokens", "4", "--no-progress"]
    out = tmp_path / "e.json"
    assert main(args + ["--out", str(out)]) == 0
    assert json.loads(out.read_text())["chat_template"] is True  # the run's auto: its model names a chat model
    assert "string prompts through the chat template (data.chat_template=auto" in capsys.readouterr().err
    assert main(args + ["--out", str(out), "--chat-template", "off"]) == 0
    assert json.loads(out.read_text())["chat_template"] is False
    assert main(args + ["--out", str(out), "chat_template=off"]) == 0  # YAML reads off as false: still off
    assert json.loads(out.read_text())["chat_template"] is False

"""spro.train, the Python API with TRL's trainer arguments, on the tiny model."""

from __future__ import annotations

import re

import pytest
from helpers import read_jsonl

import spro
from spro.config import ConfigError, TrainConfig

SMALL = dict(total_steps=2, rollout={"prompts_per_step": 2, "num_generations": 4, "max_new_tokens": 8},
             optim={"lr": 1e-3}, logging={"tensorboard": False, "progress_bar": False})


def digits_reward(completions, **kwargs):
    """TRL's convention: the share of digits in each completion."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def exact_reward(completions, solution, **kwargs):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [float(t.strip() == s) for t, s in zip(texts, solution)]


def _rows(n: int, chat: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        q = f"{i % 10}+{i // 10}="
        rows.append({"prompt": [{"role": "user", "content": q}] if chat else q, "solution": str(i % 10 + i // 10)})
    return rows


def test_train_with_datasets_reward_callables_and_callbacks(model_dir, tmp_path):
    from datasets import Dataset

    seen = []
    out = spro.train(model=str(model_dir), reward_funcs=[digits_reward, exact_reward], reward_weights=[1.0, 2.0],
                     train_dataset=Dataset.from_list(_rows(20)), eval_dataset=Dataset.from_list(_rows(6)),
                     callbacks=[seen.append], output_dir=str(tmp_path / "run"), algorithm={"name": "grpo"},
                     **{"algorithm.kl_coef": 0.0}, **SMALL)
    assert out == tmp_path / "run"
    m = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in seen] == [r["step"] for r in m] == [1, 2]
    assert seen[0]["reward/mean"] == pytest.approx(m[0]["reward/mean"])
    assert "reward/digits_reward/mean" in seen[0] and "reward/exact_reward/mean" in seen[0]
    assert "eval/accuracy" not in seen[0] and seen[1]["eval/n"] == 6  # the last step evaluates
    cfg = (out / "config.yaml").read_text()
    assert "name: grpo" in cfg and re.search(r"name: exact_reward\s+weight: 2.0", cfg)


def test_train_with_a_model_object_and_chat_prompts(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    cfg = TrainConfig()
    out = spro.train(model=model, processing_class=tok, reward_funcs=digits_reward, train_dataset=_rows(8, chat=True),
                     config=cfg, output_dir=str(tmp_path / "run"), total_steps=1,
                     rollout={"prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 4},
                     logging={"tensorboard": False, "progress_bar": False})
    assert (out / "start-model" / "config.json").is_file()
    assert len(read_jsonl(out / "metrics.jsonl")) == 1
    assert f"name_or_path: {out / 'start-model'}" in (out / "config.yaml").read_text()


def test_api_errors_say_what_to_give(model_dir, tmp_path):
    from datasets import Dataset

    with pytest.raises(ConfigError, match="train_dataset: no 'prompt' column.*question"):
        spro.train(model=str(model_dir), reward_funcs=digits_reward, train_dataset=Dataset.from_list([{"question": "a"}]),
                   output_dir=str(tmp_path / "a"), **SMALL)
    with pytest.raises(ConfigError, match=r"reward_funcs\[0\]: reward function .*takes neither"):
        spro.train(model=str(model_dir), reward_funcs=[lambda x: [0.0]], train_dataset=_rows(4))
    with pytest.raises(ConfigError, match="eval_every=0 but no eval_dataset"):
        spro.train(model=str(model_dir), reward_funcs=digits_reward, train_dataset=_rows(4), eval_every=0)
    with pytest.raises(ConfigError, match="rollout.num_generatoins"):
        spro.train(model=str(model_dir), reward_funcs=digits_reward, train_dataset=_rows(4),
                   rollout={"num_generatoins": 4})
    with pytest.raises(ConfigError, match="callbacks"):
        spro.train(model=str(model_dir), reward_funcs=digits_reward, train_dataset=_rows(4), callbacks=[object()])


def test_build_config_layers():
    from spro.api import build_config

    cfg = build_config({"total_steps": 7}, algorithm={"name": "grpo", "kl_coef": 0.1}, **{"rollout.temperature": 0.5})
    assert (cfg.total_steps, cfg.algorithm.name, cfg.algorithm.kl_coef, cfg.rollout.temperature) == (7, "grpo", 0.1, 0.5)
    again = build_config(cfg, total_steps=9)
    assert again.total_steps == 9 and again.algorithm.kl_coef == 0.1


def test_resume_through_the_api(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    kw = dict(model=model, processing_class=tok, reward_funcs=[digits_reward], train_dataset=_rows(8),
              output_dir=str(tmp_path / "run"), rollout={"prompts_per_step": 2, "num_generations": 2,
                                                         "max_new_tokens": 4},
              logging={"tensorboard": False, "progress_bar": False})
    out = spro.train(total_steps=1, **kw)
    assert spro.train(total_steps=2, resume=out, **kw) == out
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


@pytest.mark.parametrize("applied", [True, False])
def test_the_start_model_of_a_model_object_records_its_source_s_rendering(model_dir, tmp_path, applied):
    """spro.train(model=<object>) saves the object as the run's start model, a folder whose name says nothing of
    the model: it records how the object's source (here a spro sft folder with a record) rendered prompts, and
    data.chat_template=auto follows that record."""
    import json

    from transformers import AutoModelForCausalLM

    from spro.api import _save_start_model
    from spro.data.prompts import PROMPTS_RECORD, resolve_chat_template
    from spro.models.loading import load_model

    model, tok = load_model(str(model_dir))
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    src = tmp_path / "warm"  # (no instruct/chat in the name: only the record can say)
    model.save_pretrained(str(src))
    tok.save_pretrained(str(src))
    (src / "sft_config.json").write_text(json.dumps({"chat_template_applied": applied}))
    dest = _save_start_model(AutoModelForCausalLM.from_pretrained(str(src)), tok, tmp_path / "run", overwrite=False)
    assert json.loads((dest / PROMPTS_RECORD).read_text()) == {"source": str(src), "chat_template_applied": applied}
    got, why = resolve_chat_template("auto", tok, str(dest))
    assert got is applied and "recorded from the model it was saved from" in why

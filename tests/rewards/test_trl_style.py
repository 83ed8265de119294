"""TRL's reward convention: functions written as TRL's documentation shows work unchanged.

The reward functions below are written in the style of TRL's GRPOTrainer documentation ("Using a
custom reward function"): called by keyword, completions as ``[{"role": "assistant", "content": ...}]``
for conversational prompts, ``completion_ids``, the dataset's columns, ``trainer_state``, None for
"not applicable". spro's own positional convention keeps working.
"""

from __future__ import annotations

import json
import re

import pytest

from spro.rewards import RewardError, call_reward, combine_rewards
from spro.rewards.trl_style import (RewardSignatureError, check_reward_columns, check_reward_signature,
                                    invoke_reward, trainer_state)

# ---------------------------------------------------------------------------------------- TRL-style functions


def format_reward_func(completions, **kwargs):
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


def length_reward_func(completion_ids, **kwargs):
    """Reward function that gives higher scores to longer completions (in tokens)."""
    return [float(len(ids)) for ids in completion_ids]


def accuracy_reward_func(completions, solution, **kwargs):
    """1.0 when the completion's content contains the solution."""
    contents = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if s in c else 0.0 for c, s in zip(contents, solution)]


def multi_task_reward_func(prompts, completions, task, **kwargs):
    """Only math rows are scored; the others are not applicable (None)."""
    return [float(len(c[0]["content"]) > 0) if t == "math" else None for c, t in zip(completions, task)]


def curriculum_reward_func(completions, trainer_state, **kwargs):
    """A reward that depends on training progress."""
    frac = trainer_state.global_step / trainer_state.max_steps
    return [frac] * len(completions)


CHAT = [[{"role": "user", "content": "What is 2+3?"}], [{"role": "user", "content": "What is 1+1?"}]]
TEXTS = ["<think>easy</think><answer>5</answer>", "it is 3"]


def test_trl_doc_functions_on_conversational_prompts():
    cols = {"solution": ["5", "2"], "task": ["math", "code"], "completion_ids": [[1, 2, 3], [4]],
            "trainer_state": [trainer_state(3, 12)] * 2}
    assert call_reward(format_reward_func, CHAT, TEXTS, **cols) == [1.0, 0.0]
    assert call_reward(length_reward_func, CHAT, TEXTS, **cols) == [3.0, 1.0]
    assert call_reward(accuracy_reward_func, CHAT, TEXTS, **cols) == [1.0, 0.0]
    assert call_reward(multi_task_reward_func, CHAT, TEXTS, **cols) == [1.0, None]
    assert call_reward(curriculum_reward_func, CHAT, TEXTS, **cols) == [0.25, 0.25]


def test_the_call_is_trls():
    """Keywords, message lists for conversational prompts, text for string prompts, columns by name."""
    seen = {}

    def spy(prompts, completions, completion_ids, trainer_state, **kwargs):
        seen.update(prompts=prompts, completions=completions, ids=completion_ids, state=trainer_state, kw=kwargs)
        return [0.0] * len(completions)

    state = trainer_state(2, 10, epoch=0.5)
    call_reward(spy, CHAT, TEXTS, answer=["5", "2"], completion_ids=[[1], [2]], trainer_state=[state, state])
    assert seen["prompts"] == CHAT and seen["ids"] == [[1], [2]] and seen["kw"] == {"answer": ["5", "2"]}
    assert seen["completions"] == [[{"role": "assistant", "content": t}] for t in TEXTS]
    assert seen["state"].global_step == 2 and seen["state"].max_steps == 10 and seen["state"].epoch == 0.5
    call_reward(spy, ["a", "b"], TEXTS, answer=["5", "2"])
    assert seen["completions"] == TEXTS and seen["ids"] is None and seen["state"] is None


def test_trls_own_reward_functions():
    """trl.rewards' functions, imported from the installed TRL."""
    trl_rewards = pytest.importorskip("trl.rewards")
    out = call_reward(trl_rewards.think_format_reward, CHAT, ["<think>\nhmm\n</think>\n5", "5"])
    assert out == [1.0, 0.0]
    punish = trl_rewards.get_soft_overlong_punishment(max_completion_len=10, soft_punish_cache=5)
    out = call_reward(punish, CHAT, TEXTS, completion_ids=[[1] * 4, [1] * 10])
    assert out == [0.0, -1.0]


def test_spros_own_signature_and_the_positional_one_keep_working():
    def spro_style(prompts, completions, answer, **columns):  # examples/own_data/my_reward.py's form
        return [float(c.strip() == a) for c, a in zip(completions, answer)]

    assert call_reward(spro_style, ["1+1=", "2+2="], ["2", "5"], answer=["2", "4"], completion_ids=[[1], [2]],
                       trainer_state=[None, None]) == [1.0, 0.0]
    seen = []
    positional = lambda p, c, **kw: seen.append((p, c, kw)) or [1.0] * len(c)  # noqa: E731
    assert check_reward_signature(positional) == "positional"
    assert call_reward(positional, CHAT, TEXTS, answer=["5", "2"], completion_ids=[[1], [2]]) == [1.0, 1.0]
    assert seen == [(CHAT, TEXTS, {"answer": ["5", "2"]})]  # text completions; no TRL-only keyword


def test_builtin_rewards_take_trls_call():
    """spro's built-in rewards give the same values for chat-message completions as for text."""
    from spro.rewards import get_reward

    math = get_reward("math")
    texts = ["so \\boxed{5}", "the answer is 7"]
    chat = call_reward(math, CHAT, texts, answer=["5", "2"], completion_ids=[[1], [2]])
    assert chat == call_reward(math, ["2+3", "1+1"], texts, answer=["5", "2"]) == [1.0, 0.0]
    fmt = get_reward("format")
    assert call_reward(fmt, CHAT, texts) == call_reward(fmt, ["a", "b"], texts) == [1.0, 0.0]


def test_combined_rewards_mix_conventions():
    both = combine_rewards([(format_reward_func, 1.0), (lambda p, c, **kw: [len(x) / 100 for x in c], 2.0)])
    assert call_reward(both, CHAT, TEXTS) == pytest.approx([1.0 + 2 * len(TEXTS[0]) / 100, 2 * 7 / 100])


def test_a_function_without_kwargs_gets_only_what_it_names():
    def strict(completions, solution):
        return [float(s in c[0]["content"]) for c, s in zip(completions, solution)]

    assert invoke_reward(strict, CHAT, TEXTS, {"solution": ["5", "9"], "other": [1, 2],
                                               "completion_ids": [[1], [2]]}) == [1.0, 0.0]


def test_signature_errors_name_the_function_and_what_is_wrong():
    def one_arg(x):
        return [0.0]

    def wants_logger(completions, log_metric, **kwargs):
        return [0.0] * len(completions)

    def pos_only(completions, /, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(RewardSignatureError, match=r"one_arg\(x\).*takes neither"):
        check_reward_signature(one_arg)
    with pytest.raises(RewardSignatureError, match=r"wants_logger.*requires log_metric.*spro does not provide"):
        check_reward_signature(wants_logger)
    with pytest.raises(RewardSignatureError, match=r"pos_only.*positional-only"):
        check_reward_signature(pos_only)
    with pytest.raises(RewardSignatureError, match="not callable"):
        check_reward_signature("math")
    with pytest.raises(RewardSignatureError, match=r"accuracy_reward_func: it requires 'solution'.*columns besides "
                                                   r"'prompt': answer\)"):
        check_reward_columns(accuracy_reward_func, ["answer"])
    check_reward_columns(accuracy_reward_func, ["solution", "answer"])


def test_a_string_completion_error_on_chat_prompts_says_what_completions_are():
    def text_only(prompts, completions, **kw):
        return [float(c.startswith("<think>")) for c in completions]

    with pytest.raises(RewardError, match=r"AttributeError.*prompts are chat messages.*completion\[0\]\['content'\]"):
        call_reward(text_only, CHAT, TEXTS)


# ------------------------------------------------------------------------------------------- in the trainer


def _rows(chat: bool, n: int = 16) -> list[dict]:
    rows = []
    for i in range(n):
        q = f"{i}+{i}="
        rows.append({"prompt": [{"role": "user", "content": q}] if chat else q, "solution": str(2 * i), "answer": str(2 * i),
                     "task": "math" if i % 2 else "code"})
    return rows


@pytest.mark.parametrize("chat", [False, True], ids=["string-prompts", "chat-prompts"])
def test_trl_style_rewards_in_the_trainer(model_dir, tmp_path, chat):
    from helpers import read_jsonl, small_overrides

    from spro.config import load_config
    from spro.trainer import train

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(chat)))
    seen = []

    def spy_format(completions, completion_ids, trainer_state, **kwargs):
        seen.append((completions[0], completion_ids[0], trainer_state.global_step, sorted(kwargs)))
        return [0.0] * len(completions)

    def task_reward(prompts, completions, task, **kwargs):
        return [float(len(ids)) if t == "math" else None for ids, t in zip(kwargs["completion_ids"], task)]

    rewards = "[{name: fmt, weight: 0.5}, {name: acc}, {name: length, weight: 0.01}, {name: multi}]"
    over = small_overrides(model_dir, tmp_path / "run", total_steps=2, eval_every=-1,
                           **{"data.task": "null", "data.source": str(data), "data.rewards": rewards,
                              # no time limit: the functions run in this process, so the spy sees its calls
                              "data.reward_timeout": "0"})
    funcs = {"fmt": spy_format, "acc": accuracy_reward_func, "length": length_reward_func, "multi": task_reward}
    out = train(load_config(overrides=over), reward_funcs=funcs)
    m = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in m] == [1, 2]
    assert all(r["reward/length/mean"] > 0 and r["reward/errors"] == 0 for r in m)
    completion, ids, step, kw = seen[0]
    assert (isinstance(completion, list) and completion[0]["role"] == "assistant") if chat else isinstance(completion, str)
    assert ids and all(isinstance(t, int) for t in ids) and step == 1 and seen[-1][2] == 2
    assert {"prompts", "solution", "task"} <= set(kw) and not {"completions", "completion_ids"} & set(kw)


def test_a_bad_reward_signature_stops_before_any_model_loads(model_dir, tmp_path, monkeypatch):
    from helpers import small_overrides

    import spro.trainer.loop as loop
    from spro.config import ConfigError, load_config

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded before the reward was checked")

    monkeypatch.setattr(loop, "load_policy", no_loading)
    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"data.rewards 'digits': reward function .*\(completion\).*takes neither"):
        loop.Trainer(cfg, reward_funcs={"digits": lambda completion: [0.0]})
    monkeypatch.undo()  # the columns are checked once the data is loaded, before the first step
    with pytest.raises(ConfigError, match=r"data.rewards 'digits'.*requires 'gold', which is not a column"):
        loop.Trainer(cfg, reward_funcs={"digits": lambda completions, gold, **kw: [0.0] * len(completions)})

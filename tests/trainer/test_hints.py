"""Messages: the start line of a generated evaluation set, a run whose groups all score the same, a
--resume of a finished run."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
from helpers import small_overrides

from spro.config import load_config
from spro.data.loader import describe_datasets
from spro.trainer import train
from spro.trainer.hints import FLAT_STEPS, ZeroVarianceWatch


def test_the_start_line_of_a_source_with_generated_evaluation_questions():
    d = SimpleNamespace(task=None, source="reasoning_gym:gsm_symbolic", eval_fraction=None, eval_source=None,
                        eval_split=None)
    line = describe_datasets(d, range(1000), range(8))
    assert line == "reasoning_gym:gsm_symbolic (1000 prompts; 8 evaluation prompts, apart from the training ones)"
    assert "None" not in describe_datasets(d, range(10), None)


def test_zero_variance_watch_warns_once_after_a_run_of_flat_steps():
    watch = ZeroVarianceWatch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in range(1, FLAT_STEPS):
            assert watch({"step": step, "groups/zero_variance_frac": 1.0}) is None
        assert watch({"step": FLAT_STEPS, "groups/zero_variance_frac": 0.5}) is None  # the run is broken
    with pytest.warns(UserWarning, match=r"steps 6-10: in every group all responses got the same reward"):
        for step in range(FLAT_STEPS + 1, 2 * FLAT_STEPS + 1):
            watch({"step": step, "groups/zero_variance_frac": 1.0, "reward/mean": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert watch({"step": 11, "groups/zero_variance_frac": 1.0}) is None  # once


def test_a_run_that_never_succeeds_is_told_what_it_means(model_dir, tmp_path):
    over = small_overrides(model_dir, tmp_path / "run", total_steps=FLAT_STEPS, eval_every=-1)
    with pytest.warns(UserWarning, match=r"steps 1-5: .*every outcome advantage is 0.*logging.log_completions"):
        train(load_config(overrides=over), reward_funcs={"digits": lambda prompts, completions, **kw: [0.0] * 8})


def test_resuming_a_finished_run_says_how_to_continue(model_dir, tmp_path):
    from helpers import REWARDS, read_jsonl

    out = train(load_config(overrides=small_overrides(model_dir, tmp_path / "run", total_steps=1)),
                reward_funcs=REWARDS)
    with pytest.warns(UserWarning, match=rf"--resume {out}: the run has finished \(step 1 of total_steps=1\).*"
                                         rf"spro train --resume {out} total_steps=2"):
        train(None, resume=out, reward_funcs=REWARDS)
    assert len(read_jsonl(out / "metrics.jsonl")) == 1

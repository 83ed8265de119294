"""module:attr rewards and algorithms are imported from the working directory without PYTHONPATH."""

from __future__ import annotations

import sys
import textwrap

import pytest

from spro.imports import import_object


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A working directory that is not on sys.path, with a module of rewards in it."""
    (tmp_path / "my_rewards_in_cwd.py").write_text(textwrap.dedent('''
        def exact(prompts, completions, answer, **kw):
            return [float(c.strip() == a) for c, a in zip(completions, answer)]

        NOT_CALLABLE = 3
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    sys.modules.pop("my_rewards_in_cwd", None)


def test_reward_from_the_working_directory(user_folder):
    from spro.rewards import get_reward

    fn = get_reward("my_rewards_in_cwd:exact")
    assert fn(["p", "q"], ["4", "5"], answer=["4", "4"]) == [1.0, 0.0]
    assert str(user_folder) == sys.path[-1]  # appended: never shadows an installed module
    with pytest.raises(ValueError, match="reward 'my_rewards_in_cwd:NOT_CALLABLE' is not callable"):
        get_reward("my_rewards_in_cwd:NOT_CALLABLE")


def test_errors_name_the_setting_and_the_folder(user_folder):
    with pytest.raises(ValueError, match=r"reward 'nope_mod:f': cannot import module 'nope_mod'.*working directory "
                                         rf"\({user_folder}\)"):
        import_object("nope_mod:f", "reward 'nope_mod:f'")
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        import_object("my_rewards_in_cwd:missing", "x")
    with pytest.raises(ValueError, match="must look like 'module:attr'"):
        import_object("my_rewards_in_cwd:", "x")

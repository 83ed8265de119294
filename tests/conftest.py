"""Shared fixtures. Helper functions (small configs, a recording PRM, a kill harness) are in helpers.py."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A ~30k-parameter random Llama with the character tokenizer, saved as a Hugging Face folder."""
    from helpers import save_small_model

    return save_small_model(tmp_path_factory.mktemp("model") / "small")


@pytest.fixture(scope="session")
def char_tokenizer():
    """The character tokenizer of spro.models.tiny."""
    from spro.models.tiny import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(autouse=True, scope="session")
def _code_rewards_without_a_sandbox():
    """Code rewards refuse to run model-written code where neither bubblewrap nor user namespaces
    work (isolation 'auto' never falls back to 'none'). The tests' programs are our own: on such a
    machine they run with the explicit isolation='unsafe-none', and the session summary says so."""
    from spro.rewards import sandbox

    p = sandbox._probe()
    if p["bwrap"] or p["namespace"]:
        yield
        return
    orig = sandbox._resolve_isolation
    sandbox._resolve_isolation = lambda iso: orig(sandbox.UNSAFE_NONE if iso == "auto" else iso)
    os.environ["SPRO_TESTS_UNSAFE_NONE"] = "1"
    try:
        yield
    finally:
        sandbox._resolve_isolation = orig


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("SPRO_TESTS_UNSAFE_NONE"):
        terminalreporter.write_line("no sandbox on this machine (no bubblewrap, no user namespaces): the code "
                                    "reward tests ran their own programs with isolation='unsafe-none'")

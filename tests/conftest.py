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

"""spro's GGUF loader on a tiny GGUF file written by the tests (tests/tiny_gguf.py): same weights and tokens."""

from __future__ import annotations

import pytest
import torch

from spro.models.loading import load_model
from spro.models.tiny import build_char_tokenizer, build_tiny_model
from tiny_gguf import MODEL_KW, write_tiny_gguf


def test_a_tiny_gguf_loads_back_to_the_same_model(tmp_path):
    pytest.importorskip("gguf")
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    tok = build_char_tokenizer()
    ref = build_tiny_model(tok, **MODEL_KW)
    for model, gtok in (load_model(str(path)), load_model(str(tmp_path), gguf_file="tiny.gguf")):
        ids = gtok("Q:12+7=")["input_ids"]
        assert ids == tok("Q:12+7=")["input_ids"] and gtok.eos_token_id == tok.eos_token_id
        x = torch.tensor([ids])
        torch.testing.assert_close(model(x).logits, ref(x).logits, rtol=0, atol=0)

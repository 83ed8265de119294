"""The character tokenizer and tiny Llama: round-trips, offline save/reload, size, loader errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

from spro.models.loading import ModelLoadError, load_model_and_tokenizer, save_model_and_tokenizer
from spro.models.tiny import build_char_tokenizer, build_tiny_model, count_parameters

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["Q:48+26+2=", "48+26=74;74+2=76;A:76", "Hello, World! 1 + 2 = 3\nnext line", "  spaces  "]


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tok):
    path = tmp_path_factory.mktemp("tiny")
    model = build_tiny_model(tok, seed=0)
    save_model_and_tokenizer(model, tok, path)
    return path, model


def test_tokenizer_is_character_level_and_round_trips(tok):
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text)
        assert tok.decode(ids) == text
    assert tok.pad_token == "<pad>" and tok.eos_token == "<eos>"
    assert tok.pad_token_id != tok.eos_token_id
    ids = tok("1+1", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "1+1"
    # Unknown characters map to <unk> rather than failing.
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    # No BOS/EOS added by default: the prompt is exactly its characters.
    assert tok("Q:1+2=")["input_ids"] == tok("Q:1+2=", add_special_tokens=False)["input_ids"]


def test_chat_template(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "1+2"}], tokenize=False, add_generation_prompt=True)
    assert text == "user: 1+2\nassistant: "


def test_parameter_count_default_about_one_million(tok):
    n = count_parameters(build_tiny_model(tok))
    assert 0.8e6 <= n <= 1.3e6
    small = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    assert count_parameters(small) < 20_000


def test_model_seed_determinism(tok):
    a = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=1)
    b = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=1)
    c = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=2)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_bad_model_knobs(tok):
    with pytest.raises(ValueError, match="num_heads"):
        build_tiny_model(tok, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="num_layers"):
        build_tiny_model(tok, num_layers=0)


def test_save_and_reload_offline_with_auto_classes(saved, tok):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    path, model = saved
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    tok2 = AutoTokenizer.from_pretrained(str(path))
    model2 = AutoModelForCausalLM.from_pretrained(str(path))
    assert isinstance(model2, LlamaForCausalLM)
    for text in TEXTS + ["é"]:
        assert tok2(text)["input_ids"] == tok(text)["input_ids"]
        assert tok2.decode(tok2(text)["input_ids"]) == tok.decode(tok(text)["input_ids"])
    assert (tok2.pad_token_id, tok2.eos_token_id, tok2.unk_token_id) == (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id)
    assert tok2.chat_template == tok.chat_template
    assert len(tok2) == len(tok)
    ids = torch.tensor([tok("Q:1+2=")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, model2(ids).logits)


def test_load_model_and_tokenizer_helper(saved, tok):
    path, _ = saved
    model, tok2 = load_model_and_tokenizer(path, padding_side="left")
    assert tok2.padding_side == "left"
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id


def test_loader_errors(tmp_path, saved, tok):
    path, model = saved
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model_and_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model_and_tokenizer(tmp_path / "empty")
    # A config that is not a causal LM.
    from transformers import ViTConfig

    vit = tmp_path / "vit"
    ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(vit)
    with pytest.raises(ModelLoadError, match="not a causal LM"):
        load_model_and_tokenizer(vit)
    # A causal LM whose tokenizer has no pad token.
    nopad = tmp_path / "nopad"
    save_model_and_tokenizer(model, tok, nopad)
    cfg_file = nopad / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["pad_token"] = None
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="pad_token"):
        load_model_and_tokenizer(nopad)
    # ModelLoadError is a ValueError for callers that catch that.
    assert issubclass(ModelLoadError, ValueError)


def test_atomic_save_replaces_existing(tmp_path, saved, tok):
    path, model = saved
    out = tmp_path / "ckpt"
    save_model_and_tokenizer(model, tok, out, extra_files={"note.txt": "one"})
    save_model_and_tokenizer(model, tok, out, extra_files={"note.txt": "two"})
    assert (out / "note.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp folders left

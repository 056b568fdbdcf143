"""Model resolution, the embedded model's one-time conversion and cache, tiny test models."""

import os

import pytest

from melrl import models
from melrl.models import cache_dir, ensure_embedded, load_model_and_tokenizer, resolve_model


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MELRL_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MELRL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "melrl"


def test_hub_ids_pass_through_and_local_folders_are_checked(tmp_path):
    assert resolve_model("Qwen/Qwen3-4B-Base") == "Qwen/Qwen3-4B-Base"
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model(str(tmp_path))


def test_tiny_model_has_a_real_tokenizer_and_generates(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert tokenizer.chat_template and tokenizer("What is 2 + 2?")["input_ids"]
    encoded = tokenizer(["What is 2 + 2?"], return_tensors="pt")
    out = model.generate(**encoded, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == encoded["input_ids"].shape[1] + 5


@pytest.mark.slow
def test_embedded_model_converts_once_then_loads_from_the_cache(monkeypatch, tmp_path):
    import torch

    monkeypatch.setenv("MELRL_CACHE_DIR", str(tmp_path))
    conversions = []
    original = models._convert_gguf
    monkeypatch.setattr(models, "_convert_gguf", lambda gguf, target: (conversions.append(gguf), original(gguf, target)))
    folder = ensure_embedded()
    assert folder == tmp_path / "models" / "smollm2-135m-instruct"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(folder))
    assert ensure_embedded() == folder and resolve_model("smollm2-135m-instruct") == str(folder)
    assert len(conversions) == 1

    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    assert "quantization_config" not in model.config.to_dict()
    from melrl.method.prompts import render

    encoded = tokenizer([render(tokenizer, "What is the capital of France?")], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**encoded, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text

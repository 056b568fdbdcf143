"""The model a generation benchmark times: in inference mode, on `OMP_NUM_THREADS` (default 2) CPU threads."""

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

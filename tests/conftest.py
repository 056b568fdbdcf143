import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer random-weight Llama with the embedded model's real tokenizer."""
    import torch

    from melrl.models import build_tiny_model

    torch.set_num_threads(2)
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))

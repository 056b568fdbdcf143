import os
from pathlib import Path

import pytest

# The torch thread budget (OMP_NUM_THREADS, default 2) is shared among pytest-xdist's workers: torch processes whose
# OpenMP threads outnumber the cores slow each other several-fold. Subprocesses inherit the share.
THREADS = max(1, int(os.environ.get("OMP_NUM_THREADS") or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The registered datasets' real files, for the tests that read them: the shared data folder beside the repository,
# when there is one and MELRL_DATA_DIR does not name another (tests/helpers.py: `needs_data` skips without them).
_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("MELRL_DATA_DIR", str(_SHARED_DATA))
# No test downloads from the public host: a missing file is an error. The download tests serve their own files on
# 127.0.0.1 and lift this for themselves.
os.environ["MELRL_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer random-weight Llama with the embedded model's real tokenizer."""
    import torch

    from melrl.models import build_tiny_model

    torch.set_num_threads(THREADS)
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))

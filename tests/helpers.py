"""Small helpers shared by the tests."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from melrl.data import DATA_DIR_ENV, REGISTERED

# The folder of the registered datasets' real files (and the reference files beside them): $MELRL_DATA_DIR, which
# the test set-up (tests/conftest.py) points at the shared data folder beside the repository when there is one.
REAL_DATA = Path(os.environ[DATA_DIR_ENV]) if os.environ.get(DATA_DIR_ENV) else None
_MISSING = [pin.file for files in REGISTERED.values() for pin in files.values()
            if REAL_DATA is None or not (REAL_DATA / pin.file).is_file()]
needs_data = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"needs the registered datasets' files in ${DATA_DIR_ENV} ({REAL_DATA or 'not set'}; {len(_MISSING)} "
           f"missing), which the test set-up points at the shared data folder beside the repository if there is one",
)


def subprocess_env() -> dict:
    """The environment for a `python -c` child that imports melrl from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def chromium(url: str, user_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """Chromium run headless on `url` with its own profile folder (`--dump-dom`, `--screenshot=...` as `extra`)."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={user_dir}", *extra, url],
        capture_output=True, text=True, timeout=90,
    )


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_times(lines: list[dict]) -> list[dict]:
    """Run-file lines without their `time_*` fields, which differ between otherwise equal runs."""
    return [{k: v for k, v in line.items() if not k.startswith("time_")} for line in lines]


def max_difference(one: dict, two: dict) -> float:
    """Largest difference between the weight samples of two runs, over every tensor both hold."""
    common = one["samples"].keys() & two["samples"].keys()
    assert len(common) >= len(one["samples"]) - 1  # all but, at most, a tied copy
    return max(abs(x - y) for name in common for x, y in zip(one["samples"][name], two["samples"][name], strict=True))


STANDIN_VLLM = Path(__file__).resolve().parent / "vllm_standin"
"""The CPU stand-in of vLLM 0.31.0 (tests/vllm_standin), for the processes that a test puts it in front of."""


def standin_env(events: Path | None = None) -> dict:
    """The environment of a process that sees the stand-in as the installed vLLM (first on PYTHONPATH), one torch
    thread, and, with `events`, the folder its event log goes to."""
    entries = [str(STANDIN_VLLM), str(STANDIN_VLLM.parents[1]), os.environ.get("PYTHONPATH")]
    path = os.pathsep.join(filter(None, entries))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    if events is not None:
        env["VLLM_STANDIN_EVENTS"] = str(events)
    return env

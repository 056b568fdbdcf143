"""Small helpers shared by the tests."""

import os
import socket
from pathlib import Path

import pytest

from melrl.data import default_data_dir

# The registered benchmarks are read from the shared data directory ($MELRL_DATA_DIR or ../shared/data).
needs_data = pytest.mark.skipif(not default_data_dir().is_dir(),
                                reason=f"shared data directory {default_data_dir()} not present")


def subprocess_env() -> dict:
    """The environment for a `python -c` child that imports melrl from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


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

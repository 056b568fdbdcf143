"""Small helpers shared by the tests."""

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from melrl.data import default_data_dir

# The registered benchmarks are read from the shared data directory ($MELRL_DATA_DIR or ../shared/data).
needs_data = pytest.mark.skipif(not default_data_dir().is_dir(),
                                reason=f"shared data directory {default_data_dir()} not present")


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

"""Small helpers shared by the tests."""

import socket


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_times(lines: list[dict]) -> list[dict]:
    """Run-file lines without their `time_*` fields, which differ between otherwise equal runs."""
    return [{k: v for k, v in line.items() if not k.startswith("time_")} for line in lines]

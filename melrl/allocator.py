"""Which malloc a training process runs under on a CPU host.

A training step on the CPU frees most of what it allocates: the KV caches of the generations, then the
activations and temporary gradients of each micro-step, all of different sizes. glibc's malloc keeps much of that
memory mapped, in fragments the next phase cannot reuse, so a step peaks 0.3-0.5 GiB above what it holds live.
jemalloc hands such memory back to the system, at the same speed (`benchmarks/step_time.py --allocator` measures
both). Since the allocator must be in place before the first allocation, the `melrl train` and `melrl demo`
commands re-execute themselves once with jemalloc preloaded when all of this holds:

- `MELRL_ALLOCATOR` is `auto` (the default) or `jemalloc`; `system` keeps the system's malloc;
- the host is Linux without a GPU driver (`jemalloc` forces it on a GPU host too);
- a jemalloc library is installed (Debian/Ubuntu: `apt install libjemalloc2`) and not already loaded.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

ENV = "MELRL_ALLOCATOR"
CHOICES = ("auto", "jemalloc", "system")
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")  # NVIDIA and AMD drivers


def jemalloc_library() -> str | None:
    """The jemalloc library the dynamic loader would find, or None."""
    return ctypes.util.find_library("jemalloc")


def gpu_host() -> bool:
    return any(os.path.exists(path) for path in GPU_DEVICE_FILES)


def jemalloc_loaded(maps: str | Path = "/proc/self/maps") -> bool:
    """Whether this process already runs with jemalloc mapped in."""
    try:
        return "jemalloc" in Path(maps).read_text()
    except OSError:
        return False


def library_to_preload(environ: dict[str, str], *, platform: str = sys.platform, library: str | None = None,
                       gpu: bool | None = None, loaded: bool | None = None) -> str | None:
    """The jemalloc library to preload for a melrl process with this environment, or None to keep malloc as it is.

    Raises ValueError for an unknown `MELRL_ALLOCATOR` and when `jemalloc` is asked for but cannot be used.
    """
    choice = environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={environ[ENV]!r}: expected one of {', '.join(CHOICES)}")
    if choice == "system":
        return None
    if (jemalloc_loaded() if loaded is None else loaded) or "jemalloc" in environ.get("LD_PRELOAD", ""):
        return None
    if platform != "linux":
        if choice == "jemalloc":
            raise ValueError(f"{ENV}=jemalloc: preloading an allocator is supported on Linux only, not {platform}")
        return None
    library = library or jemalloc_library()
    if library is None:
        if choice == "jemalloc":
            raise ValueError(f"{ENV}=jemalloc: no jemalloc library found; install it (Debian/Ubuntu: "
                             f"apt install libjemalloc2) or set {ENV}=system")
        return None
    if choice == "auto" and (gpu_host() if gpu is None else gpu):
        return None
    return library


def preload_environment(environ: dict[str, str], library: str) -> dict[str, str]:
    """A copy of `environ` that preloads `library` ahead of anything already preloaded."""
    preload = " ".join(part for part in (library, environ.get("LD_PRELOAD", "")) if part)
    return {**environ, "LD_PRELOAD": preload}


def reexec_under_jemalloc() -> None:
    """Run this process's command line again, interpreter options included, with jemalloc preloaded, where that
    applies; otherwise return."""
    environ = dict(os.environ)
    library = library_to_preload(environ)
    if library is None or not sys.executable:
        return
    print(f"melrl: running under jemalloc ({library}) to hold CPU memory down; {ENV}=system keeps malloc",
          file=sys.stderr, flush=True)
    os.execve(sys.executable, sys.orig_argv, preload_environment(environ, library))

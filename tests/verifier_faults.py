"""A verifier worker that can also be told to exit, crash or hang: the target the pool's fault tests inject
(`VerifierPool(worker_target=(this file, "worker_main"))`). The shipped worker answers `verify` requests only."""

import os
import sys
import time


def _segfault() -> None:
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the working directory
    ctypes.string_at(0)


def _hang() -> None:
    while True:
        time.sleep(3600)


def worker_main() -> None:
    verifier = sys.modules["_melrl_verify.verifier"]  # mounted by the pool's boot code
    verifier._worker_main(extra_ops={"_exit": lambda: os._exit(3), "_segfault": _segfault, "_hang": _hang})

"""Checks final answers against gold answers with math-verify, in killable worker processes.

Model output is untrusted. The parent extracts the answer (`melrl.verify.answers`), rejects pathological ones with cheap
checks, settles integer-vs-integer answers itself, and sends the rest to a `VerifierPool`: fresh Python processes
(exec'd like multiprocessing's "spawn", but without re-importing the trainer's ``__main__`` or ``melrl/__init__``)
that import only sympy and math-verify, talk JSON lines over pipes, and are killed and replaced when an item exceeds
its wall-clock timeout or when they die. POSIX only.

Nothing from a completion is ever evaluated as Python. Workers use math-verify's LaTeX path only (ANTLR parser,
latex2sympy); its `ExprExtractionConfig` path would run sympy's `parse_expr`, which calls `eval`. As defence in
depth, workers make sympy's `parse_expr`/`sympify` refuse code naming anything but number and symbol constructors.

Settings (environment): ``MELRL_VERIFY_TIMEOUT`` (seconds per item, default 5), ``MELRL_VERIFY_WORKERS`` (default
max(2, CPUs)), ``MELRL_VERIFY_MEMORY_MB`` (address-space cap per worker, default 4096, 0 for none).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from melrl.verify.answers import (
    ANSWER_FORMATS, as_integer, extract_answer, last_boxed, normalize_answer, percent_number, prescreen, same_time,
    time_of_day,
)

__all__ = ["DEFAULT_TIMEOUT", "VerifierPool", "VerifierStats", "default_pool", "verify", "verify_batch"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_MEMORY_MB = 4096
STARTUP_TIMEOUT = 120.0  # seconds for a worker to import sympy and math-verify
MAX_STARTUP_FAILURES = 3  # consecutive workers dying before ready: give up loudly
SOFT_TIMEOUT_FRACTION = 0.6  # a worker gives up on an item after this share of the timeout in CPU time

logger = logging.getLogger(__name__)
_AM_PM = re.compile(r"\d\s*[ap]\.?\s*m\b", re.IGNORECASE)


def default_timeout() -> float:
    """Seconds per item: ``MELRL_VERIFY_TIMEOUT`` or `DEFAULT_TIMEOUT`."""
    return _positive(os.environ.get("MELRL_VERIFY_TIMEOUT", DEFAULT_TIMEOUT), "MELRL_VERIFY_TIMEOUT")


def default_workers() -> int:
    """Worker processes: ``MELRL_VERIFY_WORKERS`` or max(2, usable CPUs)."""
    env = os.environ.get("MELRL_VERIFY_WORKERS")
    if env:
        return int(_positive(env, "MELRL_VERIFY_WORKERS"))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(2, cpus)


@dataclass
class VerifierStats:
    """Running counts, per pool. `timeouts` counts items that ran out of time (stopped by math-verify's own
    timeout or by killing the worker); `killed` the latter; `restarts` replacement workers started."""

    items: int = 0
    correct: int = 0
    no_answer: int = 0
    rejected: int = 0
    fast_path: int = 0
    timeouts: int = 0
    killed: int = 0
    crashes: int = 0
    restarts: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class VerifierPool:
    """A fixed number of verifier worker processes; `verify_batch` is thread-safe (calls are serialised)."""

    def __init__(self, workers: int | None = None, timeout: float | None = None, *, memory_mb: int | None = None,
                 worker_target: tuple[str, str] | None = None):
        """`worker_target`: (a Python file, a function in it) that each worker runs instead of the verifier's own
        loop, after the verifier module is mounted (`sys.modules["_melrl_verify.verifier"]`); for tests."""
        self.workers = int(workers) if workers is not None else default_workers()
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.timeout = _positive(timeout, "timeout") if timeout is not None else default_timeout()
        if memory_mb is None:
            memory_mb = int(os.environ.get("MELRL_VERIFY_MEMORY_MB", DEFAULT_MEMORY_MB))
        self.memory_mb = memory_mb
        if worker_target is not None and not os.path.isfile(worker_target[0]):
            raise FileNotFoundError(f"worker_target: {worker_target[0]} is not a file")
        self.worker_target = worker_target
        self.stats = VerifierStats()
        self.worker_info: dict[str, Any] = {}  # the last worker's "ready" message
        self._lock = threading.Lock()
        self._owner = os.getpid()
        self._closed = False
        self._startup_failures = 0
        self._workers: list[_Worker] = []
        self._procs: list[subprocess.Popen] = []  # shared with the finalizer
        self._finalizer = weakref.finalize(self, _kill_all, self._procs, self._owner)
        with self._lock:
            for _ in range(self.workers):  # started now, so that their imports overlap with the caller's work
                self._spawn()

    def verify_batch(
        self,
        completions: Sequence[str],
        golds: Sequence[Any],
        *,
        answer_format: str = "auto",
        timeout: float | None = None,
    ) -> list[bool]:
        """Whether each completion's final answer equals its gold answer."""
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
        if len(completions) != len(golds):
            raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
        timeout = self.timeout if timeout is None else _positive(timeout, "timeout")
        results = [False] * len(completions)
        jobs: dict[tuple[str, str], list[int]] = {}  # identical (answer, gold) pairs are verified once
        counts = VerifierStats(items=len(completions))
        for i, (completion, gold) in enumerate(zip(completions, golds)):
            pred = extract_answer(completion, answer_format) if isinstance(completion, str) else None
            pred = normalize_answer(pred) if pred else None
            gold = _normalize_gold(gold)
            if not pred or not gold:
                counts.no_answer += 1
                continue
            if prescreen(pred):
                counts.rejected += 1
                continue
            pending = []
            for reading in _readings(pred, gold):
                settled = _settle(*reading)
                if settled is None:
                    pending.append(reading)
                elif settled:
                    results[i], pending = True, []
                    break
            counts.fast_path += not pending
            for reading in pending:
                jobs.setdefault(reading, []).append(i)
        with self._lock:
            self._check_usable()
            if jobs:
                keys = list(jobs)
                payloads = [{"op": "verify", "pred": p, "gold": g, "t": timeout} for p, g in keys]
                for key, ok in zip(keys, self._run(payloads, timeout)):
                    for i in jobs[key]:
                        results[i] = results[i] or ok
            counts.correct = sum(results)
            for name, value in counts.as_dict().items():
                setattr(self.stats, name, getattr(self.stats, name) + value)
        return results

    def warmup(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until every worker has finished importing (optional; `verify_batch` waits as needed)."""
        with self._lock:
            self._check_usable()
            deadline = time.monotonic() + timeout
            while not all(w.ready for w in self._workers) and time.monotonic() < deadline:
                self._poll(min(1.0, max(0.0, deadline - time.monotonic())), results=[])

    def resize(self, workers: int) -> None:
        """Change the number of workers."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        with self._lock:
            self._check_usable()
            while len(self._workers) < workers:
                self._spawn()
            while len(self._workers) > workers:
                self._retire(self._workers[-1])
            self.workers = workers

    def close(self) -> None:
        """Stop all workers. Idempotent."""
        with self._lock:
            self._closed = True
            for w in list(self._workers):
                self._retire(w)
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Worker management; everything below runs with self._lock held.

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        if os.getpid() != self._owner:
            raise RuntimeError("VerifierPool was created in another process (fork); create a new one")

    def _spawn(self) -> None:
        deathsig = threading.current_thread() is threading.main_thread()
        cmd = [sys.executable, "-c", _BOOT, os.path.dirname(os.path.abspath(__file__)), str(self.memory_mb)]
        cmd.append("1" if deathsig else "0")
        if self.worker_target is not None:
            cmd.extend(self.worker_target)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True)
        self._procs.append(proc)
        self._workers.append(_Worker(proc))

    def _retire(self, w: _Worker) -> None:
        _kill(w.proc)
        self._workers.remove(w)
        if w.proc in self._procs:  # the exit-time finalizer may have emptied the list already
            self._procs.remove(w.proc)

    def _replace(self, w: _Worker) -> None:
        self._retire(w)
        self._spawn()
        self.stats.restarts += 1

    def _run(self, payloads: list[dict], timeout: float) -> list[bool]:
        results: list[bool | None] = [None] * len(payloads)
        queue = deque(range(len(payloads)))
        while queue or any(w.job is not None for w in self._workers):
            now = time.monotonic()
            for w in list(self._workers):
                if queue and w.ready and w.job is None:
                    job = queue.popleft()
                    if w.send({**payloads[job], "id": job}):
                        w.job, w.deadline = job, now + timeout
                    else:
                        queue.appendleft(job)
                        self._worker_died(w, results)
            wake = [w.deadline for w in self._workers if w.job is not None]
            wake += [w.started + STARTUP_TIMEOUT for w in self._workers if not w.ready]
            self._poll(max(0.0, min(wake) - now) if wake else 0.0, results)
            now = time.monotonic()
            for w in list(self._workers):
                if w.job is not None and now >= w.deadline:
                    results[w.job] = False
                    self.stats.timeouts += 1
                    self.stats.killed += 1
                    self._replace(w)
                elif not w.ready and now >= w.started + STARTUP_TIMEOUT:
                    self._startup_failed(w, "did not start within %.0f s" % STARTUP_TIMEOUT)
        return [bool(r) for r in results]

    def _poll(self, wait_s: float, results: list) -> None:
        poller = select.poll()
        by_fd = {}
        for w in self._workers:
            by_fd[w.fd] = w
            poller.register(w.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        for fd, _ in poller.poll(int(wait_s * 1000) + 1):
            w = by_fd[fd]
            if w not in self._workers:  # replaced while handling an earlier event; its fd may be reused already
                continue
            messages, eof = w.receive()
            for msg in messages:
                if msg.get("ready"):
                    w.ready = True
                    self._startup_failures = 0
                    self.worker_info = msg
                    if not msg.get("selftest", True):
                        logger.warning("melrl verifier worker failed its self-test: %s", msg)
                elif w.job is not None and msg.get("id") == w.job:
                    results[w.job] = bool(msg.get("ok"))
                    self.stats.timeouts += bool(msg.get("timeout")) and not msg.get("ok")
                    w.job = None
            if eof:
                self._worker_died(w, results)

    def _worker_died(self, w: _Worker, results: list) -> None:
        if not w.ready:
            self._startup_failed(w, "exited with status %s while starting" % w.proc.poll())
            return
        if w.job is not None:
            results[w.job] = False
            self.stats.crashes += 1
        self._replace(w)

    def _startup_failed(self, w: _Worker, why: str) -> None:
        self._startup_failures += 1
        self._replace(w)
        if self._startup_failures >= MAX_STARTUP_FAILURES:
            self._startup_failures = 0
            raise RuntimeError(
                f"melrl verifier worker {why} ({MAX_STARTUP_FAILURES} times in a row); see its stderr above. "
                "Check that math-verify is installed for this interpreter and that MELRL_VERIFY_MEMORY_MB "
                f"(now {self.memory_mb}) is large enough."
            )


_default: VerifierPool | None = None
_default_lock = threading.Lock()


def default_pool(workers: int | None = None) -> VerifierPool:
    """The shared pool used by `verify`/`verify_batch`, created on first use (and resized if `workers` differs)."""
    global _default
    with _default_lock:
        if _default is None or _default.closed or _default._owner != os.getpid():
            _default = VerifierPool(workers)
        elif workers is not None and workers != _default.workers:
            _default.resize(workers)
        return _default


def verify_batch(
    completions: Sequence[str],
    golds: Sequence[Any],
    *,
    answer_format: str = "auto",
    timeout: float | None = None,
    workers: int | None = None,
) -> list[bool]:
    """Whether each completion's final answer equals its gold answer, using the shared pool.

    `timeout` is the wall-clock limit per item (default ``MELRL_VERIFY_TIMEOUT`` or 5 s); an item that exceeds it,
    has no extractable answer, or fails the pre-screen counts as False.
    """
    pool = default_pool(workers)
    return pool.verify_batch(completions, golds, answer_format=answer_format, timeout=timeout)


def verify(completion: str, gold: Any, *, answer_format: str = "auto", timeout: float | None = None) -> bool:
    """Whether the completion's final answer equals `gold` (see `verify_batch`)."""
    return verify_batch([completion], [gold], answer_format=answer_format, timeout=timeout)[0]


@atexit.register
def _close_default_pool() -> None:
    if _default is not None and _default._owner == os.getpid():
        _default.close()


def _positive(value: Any, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not x > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return x


def _readings(pred: str, gold: str) -> list[tuple[str, str]]:
    """The (answer, gold) pairs that may show an answer right. A percentage against a plain number is read both as
    its number and as itself: "35\\%" is right for a gold of 35 (what a question asking for a percentage wants;
    the verifier does not see the question) and, through math-verify, for 0.35."""
    pred_pct, gold_pct = percent_number(pred), percent_number(gold)
    if (pred_pct is None) == (gold_pct is None):
        return [(pred, gold)]
    return [(pred_pct or pred, gold_pct or gold), (pred, gold)]


def _settle(pred: str, gold: str) -> bool | None:
    """The verdict where math-verify is not needed (times of day, integers against integers), else None."""
    on_clock = _compare_times(pred, gold)
    if on_clock is not None:  # math-verify would read "4:30" as the ratio 4/30
        return on_clock
    pred_int, gold_int = as_integer(pred), as_integer(gold)
    if pred_int is not None and gold_int is not None:
        return pred_int == gold_int
    return None


def _compare_times(pred: str, gold: str) -> bool | None:
    """Times of day compared as times ("4:30 p.m." = "16:30"); None where math-verify should decide: when either
    is not a time, except that a gold answer with am/pm is only matched by a time."""
    same = same_time(pred, gold)
    if same is not None:
        return same
    if time_of_day(gold) is not None and _AM_PM.search(gold):
        return False
    return None


def _normalize_gold(gold: Any) -> str:
    if gold is None:
        return ""
    s = str(gold).strip()
    if "\\boxed" in s or "\\fbox" in s:
        s = last_boxed(s) or s
    return normalize_answer(s)


def _kill(proc: subprocess.Popen) -> None:
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # unkillable (D state); leave it to the OS
        pass


def _kill_all(procs: list, owner: int) -> None:
    if os.getpid() != owner:  # a forked child must not kill its parent's workers
        return
    for proc in list(procs):
        _kill(proc)
    procs.clear()


class _Worker:
    """Parent-side handle of one worker process."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.ready = False
        self.job: int | None = None
        self.deadline = 0.0
        self.started = time.monotonic()

    def send(self, msg: dict) -> bool:
        data = memoryview(json.dumps(msg).encode() + b"\n")
        try:
            while data:
                data = data[os.write(self.proc.stdin.fileno(), data) :]
        except OSError:
            return False
        return True

    def receive(self) -> tuple[list[dict], bool]:
        """Messages now available, and whether the worker has closed its end."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except OSError:
            chunk = b""
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        messages = []
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                messages.append(msg)
        return messages, not chunk


# ----------------------------------------------------------------------------------------------------------------
# Worker process. Started as `python -c _BOOT <package dir> <memory MB> <deathsig>`; the package directory is
# mounted under a private name so that `melrl/__init__.py` (which may import torch) is never imported in workers.

_BOOT = """\
import importlib, sys, types
if sys.path and sys.path[0] == "":
    del sys.path[0]
pkg = types.ModuleType("_melrl_verify")
pkg.__path__ = [sys.argv[1]]
sys.modules["_melrl_verify"] = pkg
verifier = importlib.import_module("_melrl_verify.verifier")
if len(sys.argv) > 4:  # VerifierPool(worker_target=(file, function))
    import importlib.util
    spec = importlib.util.spec_from_file_location("_melrl_verify_worker", sys.argv[4])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    getattr(module, sys.argv[5])()
else:
    verifier._worker_main()
"""

# Names sympy's `parse_expr` may evaluate in a worker: enough for sympy.Number("12"), S("3/2") and friends.
_EVAL_ALLOWED = frozenset({"Integer", "Float", "Rational", "Number", "Symbol", "Add", "Mul", "Pow", "E", "I", "pi"})


def _worker_main(extra_ops: dict[str, Callable[[], None]] | None = None) -> None:
    """The worker's loop: answer `verify` requests; `extra_ops` (a worker target's) handle other ops by name."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    out = os.dup(1)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    sys.stdout = sys.stderr
    memory_mb, deathsig = int(sys.argv[2]), sys.argv[3] == "1"
    _watch_parent(deathsig)
    if memory_mb > 0:
        _limit_memory(memory_mb)
    checker = _Checker()
    selftest = checker.check("0.5", "\\frac{1}{2}", DEFAULT_TIMEOUT)[0] and not checker.check("2", "3", 5.0)[0]
    info = {"ready": True, "pid": os.getpid(), "eval_guard": _eval_guard_installed(), "selftest": selftest}
    _send(out, info)
    for line in sys.stdin.buffer:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "verify":
            ok, timed_out = checker.check(str(msg["pred"]), str(msg["gold"]), float(msg["t"]))
            _send(out, {"id": msg["id"], "ok": ok, "timeout": timed_out})
        elif extra_ops and op in extra_ops:
            extra_ops[op]()


def _send(fd: int, msg: dict) -> None:
    data = json.dumps(msg).encode() + b"\n"
    while data:
        data = data[os.write(fd, data) :]


class _Checker:
    """math-verify, LaTeX extraction only, with gold parses cached."""

    def __init__(self):
        import math_verify
        from math_verify import LatexExtractionConfig

        _install_eval_guard()
        self._mv = math_verify
        self._config = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
        self._golds: dict[str, list] = {}
        self.timed_out = False
        mv_logger = logging.getLogger("math_verify")
        mv_logger.propagate = False  # it logs every timeout with the whole input
        mv_logger.setLevel(logging.WARNING)
        mv_logger.addHandler(_TimeoutFlag(self))

    def check(self, pred: str, gold: str, timeout: float) -> tuple[bool, bool]:
        """(equivalent, ran out of time)."""
        # Slow items should end here, before the parent's hard limit kills the worker (a restart costs ~0.5 s).
        # math-verify times each call with signal.alarm (whole seconds, and each call cancels any outer alarm), so
        # the whole item gets its own CPU-time budget on a separate timer.
        budget = max(1, int(timeout / 2))
        self.timed_out = False
        signal.signal(signal.SIGPROF, _raise_item_timeout)
        signal.setitimer(signal.ITIMER_PROF, SOFT_TIMEOUT_FRACTION * timeout)
        try:
            gold_parsed = self._golds.get(gold)
            if gold_parsed is None:
                gold_parsed = self._parse(gold, budget)
                if gold_parsed:
                    if len(self._golds) > 4096:
                        self._golds.clear()
                    self._golds[gold] = gold_parsed
            pred_parsed = self._parse(pred, budget) if gold_parsed else []
            ok = bool(pred_parsed) and bool(self._mv.verify(gold_parsed, pred_parsed, timeout_seconds=budget))
        except BaseException as e:  # math-verify's TimeoutException is a BaseException
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            self.timed_out = self.timed_out or isinstance(e, _ItemTimeout) or type(e).__name__ == "TimeoutException"
            ok = False
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.alarm(0)  # an interrupted math-verify call may leave its alarm pending
        return ok, self.timed_out

    def _parse(self, answer: str, budget: int) -> list:
        return self._mv.parse("\\boxed{" + answer + "}", extraction_config=self._config, parsing_timeout=budget)


class _ItemTimeout(BaseException):
    """Raised in a worker when an item has used its CPU budget; a BaseException, so math-verify cannot swallow it."""


def _raise_item_timeout(signum, frame) -> None:
    raise _ItemTimeout()


class _TimeoutFlag(logging.Handler):
    """math-verify reports its timeouts only as log records; turn them into a flag."""

    def __init__(self, checker: _Checker):
        super().__init__(logging.WARNING)
        self.checker = checker

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Timeout"):
            self.checker.timed_out = True


def _install_eval_guard() -> None:
    """Make sympy's `parse_expr` (hence `sympify` of a string) refuse code that names anything but numbers.

    math-verify's LaTeX path does reach it, through ``sympy.Number(token)`` on number tokens, which is harmless;
    the guard is there so that no other path can ever `eval` model text in a worker.
    """
    from sympy.parsing import sympy_parser

    original = sympy_parser.eval_expr
    if getattr(original, "_melrl_guard", False):
        return

    def guarded_eval_expr(code, local_dict, global_dict):
        compiled = compile(code, "<sympy>", "eval") if isinstance(code, str) else code
        names = _code_names(compiled)
        if not names <= _EVAL_ALLOWED:
            raise ValueError(f"melrl: refusing to evaluate an expression naming {sorted(names - _EVAL_ALLOWED)}")
        return original(compiled, local_dict, global_dict)

    guarded_eval_expr._melrl_guard = True
    sympy_parser.eval_expr = guarded_eval_expr


def _eval_guard_installed() -> bool:
    from sympy.parsing import sympy_parser

    return bool(getattr(sympy_parser.eval_expr, "_melrl_guard", False))


def _code_names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def _watch_parent(deathsig: bool) -> None:
    """Exit when the parent dies, even if it could not clean up (SIGKILL, OOM)."""
    parent = os.getppid()
    if deathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="melrl-parent-watch", daemon=True).start()


def _limit_memory(memory_mb: int) -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_mb * 2**20
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass

"""Append-only JSON-lines files (run files, evaluation samples): whole-line appends, torn-line tolerant reads,
atomic rewinding to a step."""

from __future__ import annotations

import json
import os
import tempfile
import warnings


def _encode_line(record: dict) -> bytes:
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    # A lone surrogate (undecodable model bytes) becomes the JSON escape \udcXX, which reads back the same.
    return line.encode("utf-8", errors="backslashreplace")


class JsonlWriter:
    """Append-only JSON-lines log, one record per line.

    Each `append` encodes the whole line first and hands it to the kernel in one `os.write` on a file opened
    with O_APPEND, then fsyncs (unless `fsync=False`). Appends from several processes therefore never
    interleave within a line on a local filesystem, and a crash loses at most the record being written: never
    one already appended, and never a half line in the middle of the file. If the file ends in a torn line
    when opened (a crash during a write), a newline is added first so that the torn line stays on its own
    and `read_jsonl` skips it.

    Usable as a context manager; `close()` is idempotent.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = os.fspath(path)
        self.fsync = fsync
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def append(self, record: dict) -> None:
        if self._fd is None:
            raise ValueError(f"JsonlWriter({self.path!r}) is closed")
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict, got {type(record).__name__}")
        data = _encode_line(record)
        written = os.write(self._fd, data)
        while written < len(data):  # only on a full disk or similar; keep the line whole if we can
            written += os.write(self._fd, data[written:])
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _iter_lines(path: str) -> tuple[list[tuple[bytes, dict]], list[int]]:
    """(raw line, record) for each readable line, and the 1-based numbers of unreadable lines."""
    good: list[tuple[bytes, dict]] = []
    bad: list[int] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                bad.append(n)
                continue
            if not isinstance(rec, dict):  # also a torn line that happens to parse ("12")
                bad.append(n)
                continue
            good.append((raw, rec))
    return good, bad


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a JSON-lines log. Lines that are not a whole JSON object (a torn last line after a
    crash) are skipped, and a warning says how many and which. FileNotFoundError when there is no file."""
    path = os.fspath(path)
    good, bad = _iter_lines(path)
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        warnings.warn(f"{path}: skipped {len(bad)} unreadable line(s) (line {shown})", stacklevel=2)
    return [rec for _, rec in good]


def truncate_after_step(path: str | os.PathLike, step: int) -> int:
    """Rewrite the log keeping only records with record["step"] <= step (and records without a numeric
    "step"); unreadable lines are dropped. Atomic: a temp file in the same folder, fsync, os.replace. Kept
    lines are copied byte for byte. Returns the number of records removed; 0 and no file when none exists."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return 0
    good, bad = _iter_lines(path)
    keep: list[bytes] = []
    for raw, rec in good:
        s = rec.get("step")
        if isinstance(s, (int, float)) and not isinstance(s, bool) and s > step:
            continue
        keep.append(raw if raw.endswith(b"\n") else raw + b"\n")
    removed = len(good) - len(keep)
    if removed == 0 and not bad:
        return 0
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".jsonl", dir=folder)
    try:
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        with os.fdopen(fd, "wb") as f:
            f.writelines(keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return removed

"""The append-only JSON-lines files: whole lines under concurrent writers, torn lines, rewinding to a step."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from melrl.jsonl import JsonlWriter, read_jsonl, truncate_after_step

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_writer_appends_whole_lines_and_reads_back(tmp_path):
    path = tmp_path / "sub" / "exp.jsonl"
    with JsonlWriter(path) as w:
        w.append({"step": 0, "text": "héllo ∑", "obj": object(), "path": tmp_path})
        w.append({"step": 1, "bad": "\udcff"})
    raw = path.read_bytes()
    assert raw.count(b"\n") == 2 and raw.endswith(b"\n")
    assert "héllo ∑".encode() in raw  # ensure_ascii=False
    recs = read_jsonl(path)
    assert [r["step"] for r in recs] == [0, 1]
    assert recs[0]["obj"].startswith("<object object") and recs[0]["path"] == str(tmp_path)
    assert recs[1]["bad"] == "\udcff"
    with JsonlWriter(path) as w:  # appending to an existing log
        w.append({"step": 2})
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2]
    with pytest.raises(TypeError):
        JsonlWriter(path).append(["not", "a", "dict"])


def test_closed_writer_refuses(tmp_path):
    w = JsonlWriter(tmp_path / "e.jsonl")
    w.close()
    w.close()
    with pytest.raises(ValueError):
        w.append({"step": 0})


def test_torn_last_line_is_tolerated(tmp_path):
    path = tmp_path / "exp.jsonl"
    with JsonlWriter(path) as w:
        for s in range(3):
            w.append({"step": s, "m": "x" * 100})
    with open(path, "ab") as f:
        f.write(b'{"step": 3, "m": "xx')  # a crash mid-write
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2]
    # a new writer puts its first record on a fresh line
    with JsonlWriter(path) as w:
        w.append({"step": 4})
    with pytest.warns(UserWarning, match="skipped 1"):
        assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2, 4]


_CHILD = """
import os, sys, time
from melrl.jsonl import JsonlWriter
path, tag, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
w = JsonlWriter(path, fsync=False)
while not os.path.exists(go):  # start together so that the appends really overlap
    time.sleep(0.001)
for i in range(n):
    w.append({"step": i, "writer": tag, "payload": tag * (2000 + 37 * (i % 50))})
w.close()
"""


def test_concurrent_appends_from_two_processes(tmp_path):
    path = tmp_path / "exp.jsonl"
    go = tmp_path / "go"
    n = 2000  # lines of 2-4 KB, above PIPE_BUF, so atomicity comes from O_APPEND + one write
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, str(path), tag, str(n), str(go)], env=_env())
        for tag in ("a", "b")
    ]
    time.sleep(0.5)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    recs = [json.loads(line) for line in lines[:-1]]  # every line is a whole record
    assert len(recs) == 2 * n
    for tag in ("a", "b"):
        mine = [r for r in recs if r["writer"] == tag]
        assert [r["step"] for r in mine] == list(range(n))
        assert all(r["payload"] == tag * len(r["payload"]) for r in mine)


def test_truncate_after_step(tmp_path):
    path = tmp_path / "exp.jsonl"
    with JsonlWriter(path) as w:
        w.append({"kind": "header"})
        for s in range(6):
            w.append({"step": s, "i": 0})
            w.append({"step": s, "i": 1})
    with open(path, "ab") as f:
        f.write(b'{"step": 6, "i"')
    before = {line for line in path.read_bytes().splitlines() if b'"step": 2' in line}
    assert truncate_after_step(path, 2) == 6
    recs = read_jsonl(path)  # the torn line is gone too: no warning expected
    assert recs[0] == {"kind": "header"}
    assert [r["step"] for r in recs[1:]] == [0, 0, 1, 1, 2, 2]
    assert before <= set(path.read_bytes().splitlines())  # kept lines are copied byte for byte
    assert truncate_after_step(path, 10) == 0
    assert truncate_after_step(path, -1) == 6
    assert read_jsonl(path) == [{"kind": "header"}]
    assert truncate_after_step(tmp_path / "missing.jsonl", 3) == 0
    assert not (tmp_path / "missing.jsonl").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["exp.jsonl"]  # no temp file left behind


def test_read_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "nope.jsonl")



"""The evaluation directory: config.json (what the samples depend on), samples.jsonl (one line per finished
problem, appended whole, which is what makes an evaluation resumable), results.json and results.md."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from melrl.jsonl import JsonlWriter, read_jsonl
from melrl.evaluation.bank import bank_identity, bank_summary
from melrl.evaluation.tables import RESULTS_FILE, results_markdown

CONFIG_FILE = "config.json"
SAMPLES_FILE = "samples.jsonl"
MARKDOWN_FILE = "results.md"
# Settings that change the samples: resuming with other values would mix two evaluations.
FINGERPRINT_KEYS = ("model", "template", "k", "temperature", "greedy", "max_new_tokens", "seed", "experiences",
                    "backend")
# Keys added to the fingerprint later: a directory written before one was added resumes whatever its value now.
# The back end decides how samples are seeded (per sample with transformers, once per engine with vLLM).
LATER_KEYS = ("backend",)
BANK_KEY = "experiences"  # the experience bank and K (None: no bank); compared by content hash, not by path
ANSWER_FORMATS_KEY = "answer_formats"  # benchmark -> extraction mode; the verdicts stored depend on it


class EvalDir:
    """Reads finished problems back and appends new ones; refuses to resume an evaluation with other settings."""

    def __init__(self, path: str | os.PathLike, config: Mapping):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._check_config(config)
        samples = self.path / SAMPLES_FILE
        # Later lines win, should a problem ever appear twice.
        self.done = {(r["benchmark"], r["id"]): r for r in (read_jsonl(samples) if samples.exists() else [])}
        self._writer = JsonlWriter(samples)

    def _check_config(self, config: Mapping) -> None:
        path = self.path / CONFIG_FILE
        fingerprint = {key: config.get(key) for key in FINGERPRINT_KEYS}
        if fingerprint[BANK_KEY] is not None:  # what a run's exclusions are is no setting
            fingerprint[BANK_KEY] = {k: v for k, v in fingerprint[BANK_KEY].items() if k != "exclusions"}
        formats = dict(config.get("answer_formats") or {})
        if path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
            diff = [f"{key}: {old.get(key)!r} there, {value!r} now" for key, value in fingerprint.items()
                    if key != BANK_KEY and (key in old or key not in LATER_KEYS) and old.get(key) != value]
            if bank_identity(old.get(BANK_KEY)) != bank_identity(fingerprint[BANK_KEY]):
                diff.append(f"experience bank: {bank_summary(old.get(BANK_KEY))} there, "
                            f"{bank_summary(fingerprint[BANK_KEY])} now")
            # The stored verdicts depend on how answers were read; directories from before this key pass.
            old_formats = old.get(ANSWER_FORMATS_KEY) or {}
            diff += [f"answer format of {bench}: {old_formats[bench]!r} there, {fmt!r} now"
                     for bench, fmt in formats.items() if bench in old_formats and old_formats[bench] != fmt]
            if diff:
                raise ValueError(f"{self.path} holds an evaluation with other settings ({'; '.join(diff)}); "
                                 "use another output directory or remove this one")
            if ANSWER_FORMATS_KEY in old and not formats.items() <= old_formats.items():  # new benchmarks
                old[ANSWER_FORMATS_KEY] = {**old_formats, **formats}
                _write_atomic(path, json.dumps(old, indent=2) + "\n")
        else:
            _write_atomic(path, json.dumps({**fingerprint, ANSWER_FORMATS_KEY: formats}, indent=2) + "\n")

    def append(self, record: dict) -> None:
        self._writer.append(record)
        self.done[(record["benchmark"], record["id"])] = record

    def write_results(self, results: Mapping) -> None:
        _write_atomic(self.path / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        _write_atomic(self.path / MARKDOWN_FILE, results_markdown(results))

    def close(self) -> None:
        self._writer.close()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

"""The experience bank at test time: the kept meta-experiences of a MEL run, retrieved per problem and put in its
prompt. Not in the paper (MEL internalizes its meta-experiences into the weights); a baseline against that.

A bank is a run's `experiences.jsonl` (one line per meta-experience constructed, `kept` saying whether replay
validated it). Only kept entries are used. Each is indexed with BM25 (`bm25s`) over its source problem plus its
heuristics (the parsed `parts.heuristics`; the whole analysis when it did not parse), once per bank. For an
evaluation problem the `k` best-scoring entries are retrieved, leaving out every entry whose source problem is that
problem (same text up to whitespace and case): a bank built on a test set cannot hand a problem its own
validated analysis. The retrieved analyses fill the experience slot of the paper's Empirical Validation Prompt
(`melrl.method.prompts.replay_text`, the template replay uses), most relevant first (`join_experiences`).

An entry's id is its 1-based line number in the file; the file's sha256 ties ids and results to its content.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from melrl.method.prompts import replay_text, solve_text
from melrl.training.resume import EXPERIENCES_FILE

DEFAULT_RETRIEVE = 3
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene"}  # bm25s.BM25's defaults, written out
TOKENIZER_PARAMS = {"lower": True, "stopwords": "en", "stemmer": None}  # bm25s.tokenize
FIELDS = ("problem", "heuristics")  # what is indexed; "heuristics" is the analysis when it did not parse
# What the retrieved entries depend on; an evaluation directory refuses a run whose bank differs in these.
IDENTITY_KEYS = ("sha256", "retrieve", "retriever", "retriever_params")


class ExperienceBankError(ValueError):
    """The bank cannot be used: no such file, an unreadable or malformed row, or no kept entry."""


def normalize_problem(text: str) -> str:
    """A problem's text for the exclusion test: whitespace runs as one space, case folded."""
    return " ".join(text.split()).casefold()


def resolve_bank_path(source: str | os.PathLike) -> Path:
    """A run directory (its experiences.jsonl) or the JSON-lines file itself."""
    path = Path(source)
    return path / EXPERIENCES_FILE if path.is_dir() else path


@dataclass(frozen=True)
class BankEntry:
    id: int  # 1-based line number in the file
    step: int | None
    problem_id: str | None
    problem: str
    analysis: str  # the meta-experience as generated and validated by replay: what goes in the prompt
    heuristics: str  # its parsed heuristics, one per line; "" when it did not parse

    @property
    def document(self) -> str:
        """What the retriever indexes: the source problem and the heuristics (or the whole analysis)."""
        return f"{self.problem}\n{self.heuristics or self.analysis}"


@dataclass(frozen=True)
class Retrieval:
    """The entries retrieved for one problem (best first) with their BM25 scores, and the ids of the entries
    left out because their source problem is this problem."""

    entries: tuple[BankEntry, ...]
    scores: tuple[float, ...]
    excluded: tuple[int, ...]

    def record(self) -> dict:
        """The fields this retrieval adds to the problem's line in samples.jsonl."""
        return {
            "experiences": [{"id": e.id, "score": round(s, 4), "step": e.step, "problem_id": e.problem_id}
                            for e, s in zip(self.entries, self.scores)],
            "excluded_experiences": list(self.excluded),
        }


def join_experiences(entries: Sequence[BankEntry]) -> str:
    """The text of the template's experience slot: one analysis as it is (replay's exact prompt); several, most
    relevant first, each under "Experience i:" and separated by a blank line."""
    if len(entries) == 1:
        return entries[0].analysis.strip()
    return "\n\n".join(f"Experience {i}:\n{e.analysis.strip()}" for i, e in enumerate(entries, 1))


def bank_prompt_text(problem: str, retrieval: Retrieval, template: str) -> str:
    """The user message for `problem` with its retrieved entries: the paper's Empirical Validation Prompt; the
    plain solve prompt when every entry was excluded (a bank of this problem's entries only)."""
    if not retrieval.entries:
        return solve_text(problem, template)
    return replay_text(problem, join_experiences(retrieval.entries), template)


class ExperienceBank:
    """The kept entries of one experiences.jsonl and their BM25 index (built here, once)."""

    def __init__(self, source: str | os.PathLike):
        self.path = resolve_bank_path(source)
        data = _read_bytes(self.path)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.rows, self.entries = _parse(self.path, data)
        if not self.entries:
            raise ExperienceBankError(
                f"{self.path}: no kept meta-experience among its {self.rows} row(s) (none passed replay); "
                "an experience bank needs at least one")
        self._by_problem: dict[str, list[int]] = {}
        for i, entry in enumerate(self.entries):
            self._by_problem.setdefault(normalize_problem(entry.problem), []).append(i)
        import bm25s

        self.retriever_name = f"bm25s {metadata.version('bm25s')}"
        self._bm25 = bm25s.BM25(**BM25_PARAMS)
        self._bm25.index(self._tokenize([e.document for e in self.entries]), show_progress=False)

    @staticmethod
    def _tokenize(texts: list[str]) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(texts, **TOKENIZER_PARAMS, return_ids=False, show_progress=False)

    def retrieve(self, problem: str, k: int = DEFAULT_RETRIEVE) -> Retrieval:
        """The `k` entries with the highest BM25 score for `problem` (ties: the earlier line first), entries whose
        source problem is `problem` left out; fewer when the bank has fewer others."""
        import numpy as np

        if k < 1:
            raise ValueError(f"retrieve must be >= 1, got {k}")
        tokens = self._tokenize([problem])[0]
        scores = (self._bm25.get_scores(tokens) if tokens else np.zeros(len(self.entries))).astype(np.float64)
        excluded = self._by_problem.get(normalize_problem(problem), [])
        scores[excluded] = -np.inf
        order = np.lexsort((np.arange(len(scores)), -scores))[: min(k, len(scores) - len(excluded))]
        return Retrieval(tuple(self.entries[i] for i in order), tuple(float(scores[i]) for i in order),
                         tuple(self.entries[i].id for i in excluded))

    def describe(self, retrieve: int) -> dict:
        """The bank and retrieval settings as recorded in results.json (`config.experiences`) and config.json."""
        return {
            "path": str(self.path), "sha256": self.sha256, "rows": self.rows, "kept": len(self.entries),
            "retrieve": retrieve, "retriever": self.retriever_name,
            "retriever_params": {**BM25_PARAMS, **TOKENIZER_PARAMS, "fields": list(FIELDS)},
            "prompt": "Empirical Validation Prompt (paper Appendix C); several entries as 'Experience i:' blocks",
        }


def bank_identity(described: Mapping | None) -> dict | None:
    """The part of `ExperienceBank.describe` the samples depend on (not the file's path)."""
    return None if described is None else {key: described.get(key) for key in IDENTITY_KEYS}


def bank_summary(described: Mapping | None) -> str:
    """"none" or "PATH (sha256 0123456789ab, 12 kept, K = 3)"."""
    if described is None:
        return "none"
    return (f"{described.get('path')} (sha256 {str(described.get('sha256'))[:12]}, {described.get('kept')} kept, "
            f"K = {described.get('retrieve')})")


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ExperienceBankError(f"experience bank {path} not found: pass a MEL run directory or its "
                                  f"{EXPERIENCES_FILE}")
    try:
        return path.read_bytes()
    except OSError as error:
        raise ExperienceBankError(f"experience bank {path} cannot be read: {error}") from error


def _parse(path: Path, data: bytes) -> tuple[int, list[BankEntry]]:
    """(number of rows, kept entries); ExperienceBankError naming the file and line of the first malformed row."""
    rows, entries = 0, []
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        rows += 1
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise ExperienceBankError(f"{path}, line {n}: not a JSON line ({error}); a line torn by a crash can "
                                      "be removed") from error
        if not isinstance(record, dict) or not isinstance(record.get("kept"), bool):
            raise ExperienceBankError(f"{path}, line {n}: not a meta-experience record (no true/false 'kept'); is "
                                      f"this a MEL run's {EXPERIENCES_FILE}?")
        if record["kept"]:
            entries.append(_entry(path, n, record))
    return rows, entries


def _entry(path: Path, n: int, record: dict) -> BankEntry:
    for key in ("problem", "analysis"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise ExperienceBankError(f"{path}, line {n}: a kept meta-experience without its {key!r} text")
    parts = record.get("parts")
    heuristics = parts.get("heuristics") if isinstance(parts, dict) else None
    if heuristics is not None and not (isinstance(heuristics, list) and all(isinstance(h, str) for h in heuristics)):
        raise ExperienceBankError(f"{path}, line {n}: 'parts.heuristics' is not a list of strings")
    step = record.get("step")
    return BankEntry(
        id=n, step=step if isinstance(step, int) and not isinstance(step, bool) else None,
        problem_id=None if record.get("problem_id") is None else str(record["problem_id"]),
        problem=record["problem"], analysis=record["analysis"], heuristics="\n".join(heuristics or []),
    )

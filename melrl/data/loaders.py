"""Math problems as `Record`s: the registered datasets, local files, hub datasets and generated `arith`.

`load_records(name, ...)` accepts a registered name (see `DATASETS`; its files are pinned in `melrl.data.sources`
and fetched into the data folder by `melrl.data.files` when missing), a path to a `.jsonl` / `.json` / `.parquet`
file, or a hub dataset (`hub:ORG/NAME`, or any `ORG/NAME` that is not an existing path). Answers are normalised
to plain strings per source. Malformed rows raise `DatasetError` naming the file, the row and the field, unless
`skip_invalid=True`, in which case they are skipped, counted and logged.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from melrl.data import arith
from melrl.data.errors import DatasetError
from melrl.data.files import ensure_file, resolve_data_dir
from melrl.data.repairs import AIME25_REPAIRS, Repair, RepairError, repaired
from melrl.data.sources import REGISTERED, PinnedFile
from melrl.verify.answers import last_boxed

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
RECORD_FIELDS = ("problem", "answer", "id")

logger = logging.getLogger("melrl.data")

_MISSING = object()


@dataclass(frozen=True)
class Record:
    id: str
    source: str
    problem: str
    answer: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class _FieldError(Exception):
    """A bad row or field value; turned into a `DatasetError` with the file and row, or skipped."""


# ---------------------------------------------------------------------------------------------------------------
# Field values


def _text(value: Any) -> str:
    """A field value as non-empty stripped text; integral numbers print without a decimal point."""
    if value is None or value is _MISSING:
        raise _FieldError("missing")
    if isinstance(value, bool):
        raise _FieldError("expected text, got bool")
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        if math.isnan(value):
            raise _FieldError("missing (NaN)")
        text = str(int(value)) if float(value).is_integer() else repr(float(value))
    else:
        raise _FieldError(f"expected text, got {type(value).__name__}")
    return _nonempty(text)


def _nonempty(text: str) -> str:
    if not text:
        raise _FieldError("empty")
    return text


def _integer_answer(value: Any) -> str:
    """AIME / AMC: "025" -> "25", 27.0 -> "27"."""
    text = _text(value)
    return str(int(text)) if re.fullmatch(r"[+-]?\d+", text) else text


_MATH_SEGMENT = re.compile(r"\$([^$]*)\$")
_MATH_LIST = re.compile(r"\$[^$]*\$(?:\s*,\s*\$[^$]*\$)*")


def _strip_dollars(text: str) -> str:
    """`$x$` -> `x`; `$a$,$b$` -> `a, b`."""
    if text.endswith("$."):
        text = text[:-1]
    if _MATH_LIST.fullmatch(text):
        return _nonempty(", ".join(seg.strip() for seg in _MATH_SEGMENT.findall(text)))
    # Prose mixed with maths, or an unbalanced `$` (upstream has "$221,$8$"): drop the delimiters only.
    return _nonempty(text.replace("$", "").strip())


def _olympiad_answer(value: Any) -> str:
    """OlympiadBench `final_answer`: a list of (usually one) `$`-wrapped strings."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise _FieldError("empty list")
    return ", ".join(_strip_dollars(_text(item)) for item in items)


def _gsm8k_answer(value: Any) -> str:
    """The number after the last `####`, without thousands separators."""
    text = _text(value)
    if "####" not in text:
        raise _FieldError("no '#### <answer>' line")
    final = text.rsplit("####", 1)[1].strip()
    return _nonempty(re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", final))


def _minerva_answer(value: Any) -> str:
    boxed = last_boxed(_text(value))
    if boxed is None:
        raise _FieldError("no \\boxed{...} in the solution")
    return _nonempty(boxed)


def _lookup(row: Mapping, path: str) -> Any:
    """`row[path]`, or a dotted path through mappings and lists (`prompt.0.content`)."""
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


# ---------------------------------------------------------------------------------------------------------------
# Rows -> records

Rows = Iterable[tuple[str, Any]]  # (where, row): "line 3 (1-based)" / "row 2 (0-based)", and the parsed row


def _field(row: Mapping, fields: Mapping[str, str], name: str, convert: Callable[[Any], str]) -> str:
    column = fields[name]
    try:
        return convert(_lookup(row, column))
    except _FieldError as e:
        label = f"field '{name}'" if column == name else f"field '{name}' (column '{column}')"
        raise _FieldError(f"{label}: {e}") from None


def _record(row: Any, index: int, source: str, fields: Mapping[str, str], answer: Callable[[Any], str]) -> Record:
    if isinstance(row, _FieldError):
        raise row
    if not isinstance(row, Mapping):
        raise _FieldError(f"expected an object, got {type(row).__name__}")
    problem = _field(row, fields, "problem", _text)
    answer_text = _field(row, fields, "answer", answer)
    has_id = "id" in fields and _lookup(row, fields["id"]) not in (_MISSING, None)
    rid = _field(row, fields, "id", _text) if has_id else str(index)
    return Record(rid, source, problem, answer_text)


def _records(
    rows: Rows,
    *,
    source: str,
    origin: str,
    fields: Mapping[str, str],
    answer: Callable[[Any], str] = _text,
    skip_invalid: bool = False,
    tolerated: frozenset[int] = frozenset(),
) -> tuple[list[Record], int]:
    records, skipped = [], 0
    for index, (where, row) in enumerate(rows):
        try:
            records.append(_record(row, index, source, fields, answer))
        except _FieldError as e:
            if not (skip_invalid or index in tolerated):
                raise DatasetError(f"{origin}: {where}: {e}") from None
            skipped += 1
    if skipped:
        logger.warning("skipped %d invalid row(s) in %s", skipped, origin)
    return records, skipped


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"line {lineno} (1-based)"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                yield where, _FieldError(f"invalid JSON ({e})")


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, list):  # JSON Lines saved as .json, as the hub often does
        yield from _jsonl_rows(path)
        return
    for i, row in enumerate(data):
        yield f"item {i} (0-based)", row


def _parquet_rows(path: Path, fields: Mapping[str, str]) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
        wanted = {c for col in fields.values() for c in (col, col.split(".")[0])}
        table = pfile.read(columns=[c for c in pfile.schema_arrow.names if c in wanted])
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"{path}: cannot read parquet file: {e}") from e
    for i, row in enumerate(table.to_pylist()):
        yield f"row {i} (0-based)", row


def _file_rows(path: Path, fields: Mapping[str, str]) -> Rows:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path)
    if suffix == ".json":
        return _json_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path, fields)
    raise DatasetError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(FILE_SUFFIXES)}")


def _fields(field_map: Mapping[str, str] | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    fields = dict(base or {name: name for name in RECORD_FIELDS})
    unknown = set(field_map or {}) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"field_map keys must be among {RECORD_FIELDS}, got {sorted(unknown)}")
    fields.update(field_map or {})
    return fields


# ---------------------------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class _Spec:
    """How a registered dataset's rows read; its files (split -> pinned file) are `REGISTERED[name]`."""

    fields: Mapping[str, str]  # our field -> column (dotted path); without "id" the row index is the id
    answer: Callable[[Any], str] = _text
    tolerated: frozenset[int] = frozenset()  # 0-based rows known to be broken upstream: skipped if invalid
    dropped: Mapping[str, str] | None = None  # ids left out on purpose -> why (logged when loading)
    repairs: tuple[Repair, ...] = ()  # text defects upstream, repaired as the rows load


_PLAIN = {"problem": "problem", "answer": "answer", "id": "id"}
_SPECS: dict[str, _Spec] = {
    "dapo_math_17k": _Spec(
        {"problem": "prompt.0.content", "answer": "reward_model.ground_truth", "id": "extra_info.index"},
    ),
    # Rows 5054 and 5158 are multiple-choice problems whose answer is empty upstream.
    "math_lvl3to5": _Spec({"problem": "question", "answer": "answer"}, tolerated=frozenset({5054, 5158})),
    "gsm8k": _Spec({"problem": "question", "answer": "answer"}, _gsm8k_answer),
    "aime24": _Spec(_PLAIN, _integer_answer),
    "aime25": _Spec(_PLAIN, _integer_answer, repairs=AIME25_REPAIRS),
    "amc23": _Spec(_PLAIN, _integer_answer),
    "math500": _Spec({"problem": "problem", "answer": "answer", "id": "unique_id"}),
    # 674 problems, as the updated official release (OpenBMB/OlympiadBench, 2024-07; OE_TO_maths_en_COMP) and the
    # paper's Table 1 count them: our copy (Qwen2.5-Math's, the early release) has one more, id 1965, whose answer
    # is a sentence with conditions that a rule-based checker cannot grade.
    "olympiadbench": _Spec(
        {"problem": "question", "answer": "final_answer", "id": "id"},
        _olympiad_answer,
        dropped={"1965": "answer is a sentence ('f(x)=ax+b, where b is an arbitrary integer, and a is an arbitrary "
                         "positive integer with ℧(a)=0'), left out of the updated official release (674 problems)"},
    ),
    "minerva_math": _Spec({"problem": "problem", "answer": "solution", "id": "idx"}, _minerva_answer),
}


def _known() -> str:
    return ", ".join(sorted(DATASETS))


def _registered_file(name: str, split: str | None) -> PinnedFile:
    """The pinned file of a registered dataset's split (its first split by default)."""
    files = REGISTERED[name]
    split = split or next(iter(files))
    if split not in files:
        raise DatasetError(f"dataset {name!r} has no split {split!r}; available: {', '.join(files)}")
    return files[split]


def repairs_of(name: str) -> tuple[Repair, ...]:
    """The repairs a registered dataset's rows get as they load (none for most)."""
    return _SPECS[name].repairs if name in _SPECS else ()


def _repaired_rows(rows: Rows, repairs: tuple[Repair, ...], id_field: str) -> Rows:
    for where, row in rows:
        try:
            yield where, repaired(row, repairs, id_field)
        except RepairError as e:
            yield where, _FieldError(str(e))


def _load_registered(
    name: str, spec: _Spec, split: str | None, data_dir: str | os.PathLike | None, skip_invalid: bool,
    field_map: Mapping[str, str] | None, seed: int, options: dict,
) -> tuple[list[Record], int]:
    _no_options(name, options)
    path = ensure_file(name, _registered_file(name, split), resolve_data_dir(data_dir))
    fields = _fields(field_map, spec.fields)
    rows = _file_rows(path, fields)
    if spec.repairs:
        rows = _repaired_rows(rows, spec.repairs, spec.fields["id"])
    records, skipped = _records(
        rows, source=name, origin=str(path), fields=fields, answer=spec.answer,
        skip_invalid=skip_invalid, tolerated=spec.tolerated,
    )
    if spec.dropped:
        kept = [r for r in records if r.id not in spec.dropped]
        for rid in sorted({r.id for r in records} & set(spec.dropped)):
            logger.info("%s: left out problem id %s: %s", name, rid, spec.dropped[rid])
        records = kept
    return records, skipped


def _load_arith(
    split: str | None, data_dir: Any, skip_invalid: bool, field_map: Any, seed: int, options: dict
) -> tuple[list[Record], int]:
    unknown = set(options) - {"n", "level"}
    if unknown:
        raise TypeError(f"unexpected option(s) for 'arith': {sorted(unknown)}; it takes n, level, seed, split")
    try:
        items = arith.generate(seed=seed, split=split or "train", **options)
    except ValueError as e:
        raise DatasetError(str(e)) from e
    return [Record(it["id"], "arith", it["problem"], it["answer"]) for it in items], 0


def _load_file(
    path: Path, skip_invalid: bool, field_map: Mapping[str, str] | None, options: dict
) -> tuple[list[Record], int]:
    _no_options(str(path), options)
    ensure_dataset(path)
    fields = _fields(field_map)
    rows = _file_rows(path, fields)
    return _records(rows, source=str(path), origin=str(path), fields=fields, skip_invalid=skip_invalid)


def _load_hub(
    name: str, split: str | None, skip_invalid: bool, field_map: Mapping[str, str] | None, options: dict
) -> tuple[list[Record], int]:
    import datasets

    _no_options(name, options)
    split = split or "train"
    fields = _fields(field_map)
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:
        raise DatasetError(f"cannot load hub dataset {name!r} (split {split!r}): {e}") from e
    rows = ((f"row {i} (0-based)", row) for i, row in enumerate(ds))
    origin = f"hub:{name} [{split}]"
    return _records(rows, source=f"hub:{name}", origin=origin, fields=fields, skip_invalid=skip_invalid)


def _no_options(name: str, options: dict) -> None:
    if options:
        raise TypeError(f"unexpected option(s) {sorted(options)} for {name!r}; only 'arith' takes options")


Loader = Callable[..., tuple[list[Record], int]]
DATASETS: dict[str, Loader] = {name: functools.partial(_load_registered, name, spec) for name, spec in _SPECS.items()}
DATASETS["arith"] = _load_arith


# ---------------------------------------------------------------------------------------------------------------
# Public entry points


def load_records_with_report(
    name: str | os.PathLike,
    split: str | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
    field_map: Mapping[str, str] | None = None,
    seed: int = 0,
    **arith_options: Any,
) -> tuple[list[Record], int]:
    """Like `load_records`, but also returns how many invalid rows were skipped."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    records, skipped = _dispatch(name, split, data_dir, skip_invalid, field_map, seed, arith_options)
    return (records if limit is None else records[:limit]), skipped


def _kind(name: str | os.PathLike) -> tuple[str, Any]:
    """("registered" | "arith", name), ("hub", ORG/NAME) or ("file", path): what a dataset name refers to."""
    if isinstance(name, str) and name in DATASETS:
        return ("arith" if name == "arith" else "registered"), name
    key = os.fspath(name)
    if key.startswith("hub:"):
        return "hub", key[len("hub:"):]
    path = Path(key).expanduser()
    looks_like_path = key.startswith(("/", ".", "~")) or path.suffix.lower() in FILE_SUFFIXES or "/" not in key
    if not isinstance(name, str) or path.exists() or looks_like_path:
        return "file", path
    return "hub", key


def _dispatch(
    name: str | os.PathLike, split: str | None, data_dir: Any, skip_invalid: bool,
    field_map: Mapping[str, str] | None, seed: int, options: dict,
) -> tuple[list[Record], int]:
    kind, key = _kind(name)
    if kind in ("registered", "arith"):
        return DATASETS[key](split, data_dir, skip_invalid, field_map, seed, options)
    if kind == "hub":
        return _load_hub(key, split, skip_invalid, field_map, options)
    return _load_file(key, skip_invalid, field_map, options)


def ensure_dataset(name: str | os.PathLike, split: str | None = None, *,
                   data_dir: str | os.PathLike | None = None) -> None:
    """Fail now, with a `DatasetError`, where `load_records(name, split, data_dir=...)` would fail for want of a file
    or a split: a registered dataset's file is downloaded here when missing (and downloads are on), a local file
    must exist, arith's split must be one it has. A hub dataset is checked when it loads."""
    kind, key = _kind(name)
    if kind == "registered":
        ensure_file(key, _registered_file(key, split), resolve_data_dir(data_dir))
    elif kind == "arith" and (split or "train") not in arith.SPLITS:
        raise DatasetError(f"dataset 'arith' has no split {split!r}; available: {', '.join(arith.SPLITS)}")
    elif kind == "file" and not key.is_file():
        raise DatasetError(f"no dataset named {str(key)!r} and no file at {key}; known names: {_known()}")


def load_records(name: str | os.PathLike, split: str | None = None, **options: Any) -> list[Record]:
    """Load a registered dataset, a local file or a hub dataset as a list of `Record`s.

    `split` picks gsm8k's "train"/"test" (and arith's), `limit` keeps the first N records, `field_map` maps
    `problem`/`answer`/`id` to (dotted) column names, `seed` and `arith_options` (`n`, `level`) drive `arith`.
    """
    return load_records_with_report(name, split, **options)[0]

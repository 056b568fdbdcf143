"""Repairs of text defects in an upstream file, applied to its rows as it loads: the stored file stays the pinned one.

AIME 2025 (inclusionAI/AReaL's `evaluation/data/aime25/test.jsonl`) lost backslashes to string escapes somewhere
upstream: the `\\f` of `\\frac` became a form feed, the `\\t` of `\\triangle` a tab, and the `\\\\` line break of an
`align*` environment a single backslash before a space. Each repair below names the problem, the text it replaces
and how often that text must occur there; a row that does not match it is reported, not half-repaired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Repair:
    id: str
    field: str
    old: str
    new: str
    count: int  # occurrences of `old` in the field, all replaced
    why: str


class RepairError(ValueError):
    """A row that does not hold the text a repair expects."""


AIME25_REPAIRS = (
    Repair("7", "problem", "= 5 \\ &|z", "= 5 \\\\ &|z", 1, "the line break `\\\\` of align* became `\\ `"),
    Repair("10", "problem", "< 1 \\ 2 - x", "< 1 \\\\ 2 - x", 1, "the line break `\\\\` of cases became `\\ `"),
    Repair("18", "problem", "\f", "\\f", 5, "the `\\f` of `\\frac` became a form feed"),
    Repair("19", "problem", "\t", "\\t", 1, "the `\\t` of `\\triangle` became a tab"),
    Repair("27", "problem", "\f", "\\f", 1, "the `\\f` of `\\frac` became a form feed"),
)


def repaired(row: Any, repairs: Sequence[Repair], id_field: str = "id") -> Any:
    """`row` with the repairs of its id applied (a new dict); rows without repairs come back as they are."""
    if not isinstance(row, Mapping):
        return row
    mine = [r for r in repairs if str(row.get(id_field)) == r.id]
    if not mine:
        return row
    fixed = dict(row)
    for r in mine:
        text = fixed.get(r.field)
        found = text.count(r.old) if isinstance(text, str) else 0
        if found != r.count:
            raise RepairError(f"repair of id {r.id} ({r.why}) expects {r.count} occurrence(s) of {r.old!r} in "
                              f"field '{r.field}', found {found}: not the pinned file?")
        fixed[r.field] = text.replace(r.old, r.new)
    return fixed

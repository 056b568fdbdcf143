"""The leak check (ours, beyond the paper; `MELConfig.leak_check`): does a meta-experience's heuristics or
reflective summary quote the gold answer or the problem's distinctive numbers? Appendix C's prompt forbids both;
the paper has no check of its own. Pure functions over strings (no torch, trl or transformers).
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = ["COMMON_NUMBERS", "find_leaks", "leaks"]


COMMON_NUMBERS: frozenset[str] = frozenset({"10", "90", "100", "180", "360", "1000"})
"""Numbers >= 10 that are never treated as a problem's distinctive numbers: powers of ten (AIME's "modulo
1000") and the angle constants a generic geometry heuristic names. Canonical decimal strings."""

_NUM_RUN_RE = re.compile(r"\d+(?:[.,]\d+)*")
_THOUSANDS_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_NUM_RE = re.compile(r"\d+(?:\.\d+)?")


def _canon_num(s: str) -> str:
    """Canonical decimal string: no commas, no leading zeros, no trailing fractional zeros ("012.50" -> "12.5")."""
    s = s.replace(",", "")
    whole, _, frac = s.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _numbers(text: str) -> list[str]:
    """Canonical magnitudes of the numbers in `text`, in order, each a whole token: "123" is one number (not
    "12"), "1.25" is one number, "12." is 12, "1,000" is 1000 (and, ambiguously, 1 and 0), "(3,4)" is 3 and 4.
    Signs are ignored."""
    out: list[str] = []
    for m in _NUM_RUN_RE.finditer(text):
        run = m.group()
        if _THOUSANDS_RE.fullmatch(run):
            out.append(_canon_num(run))
        for piece in run.split(","):
            if _PLAIN_NUM_RE.fullmatch(piece):
                out.append(_canon_num(piece))
            else:  # "1.2.3": a dotted list of integers
                out.extend(_canon_num(p) for p in piece.split("."))
    return out


def _is_distinctive(num: str, common: Collection[str]) -> bool:
    whole, _, frac = num.partition(".")
    if frac:
        return len((whole + frac).lstrip("0")) >= 2  # 2.5, 0.25, 1.5; not 0.5
    return len(whole) >= 2 and num not in common  # >= 10; not the common ones


_GOLD_STRIP_RE = [
    (re.compile(r"^\\boxed\{(.*)\}$"), r"\1"),
    (re.compile(r"^\\text\{(.*)\}$"), r"\1"),
    (re.compile(r"^[A-Za-z]\s*=\s*"), ""),  # "x = 5"
    (re.compile(r"^\\?\$"), ""),  # currency
    (re.compile(r"(\^\{?\\circ\}?|\u00b0|\\%|%|\\!|\.)$"), ""),
]
_GOLD_NUM_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def _gold_number(gold: str) -> str | None:
    """The canonical magnitude when the gold is a plain number (after stripping $, \\boxed, units), else None."""
    s = gold.strip().strip("$").strip()
    for _ in range(3):
        for rx, repl in _GOLD_STRIP_RE:
            s = rx.sub(repl, s).strip()
    s = s.strip("{}").strip()
    if _GOLD_NUM_RE.fullmatch(s):
        s = s.lstrip("-")
        return _canon_num("0" + s if s.startswith(".") else s)
    return None


def _canon_tex(s: str) -> str:
    """Whitespace- and LaTeX-spelling-insensitive form, applied to the gold and the text alike."""
    s = s.replace("$", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\left|\\right|\\[!,;: ]", "", s)
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r" (?=[^0-9A-Za-z])|(?<=[^0-9A-Za-z]) ", "", s)  # keep a space only between two alphanumerics
    s = re.sub(r"\{([0-9A-Za-z])\}", r"\1", s)  # x^{2} -> x^2, \frac{1}{4} -> \frac14
    return s


def _gold_forms(gold: str) -> list[str]:
    """Spellings of a non-numeric gold to look for: its canonical LaTeX, and a/b for \\frac{a}{b}, √n and
    sqrt(n) for \\sqrt{n}."""
    core = gold.strip().strip("$").strip()
    m = re.fullmatch(r"\\boxed\{(.*)\}", core)
    if m:
        core = m.group(1)
    forms = [_canon_tex(core)]
    m = re.fullmatch(r"\\(?:text|mathrm|textbf)\{(.*)\}", core)
    if m:  # \text{Monday} -> Monday
        forms.append(_canon_tex(m.group(1)))
    m = re.fullmatch(r"(-?)\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}", core)
    if m:
        forms.append(f"{m.group(1)}{m.group(2)}/{m.group(3)}")
    m = re.fullmatch(r"(-?\d*)\s*\\sqrt\s*\{\s*(\d+)\s*\}", core)
    if m:
        forms += [f"{m.group(1)}\u221a{m.group(2)}", f"{m.group(1)}sqrt({m.group(2)})"]
    forms += [f[1:] for f in forms if f.startswith("-")]  # signs ignored, as for numbers
    forms = [f for f in dict.fromkeys(forms) if f]
    # a gold too short to be distinctive ("A", "x") is not searched for
    return [f for f in forms if any(c.isdigit() for c in f) or len(f) >= 2]


def _occurs(form: str, text: str) -> bool:
    """`form` occurs in `text` as a whole token: a leading/trailing digit does not touch another digit (or a
    decimal point followed by one), a leading/trailing letter does not touch another letter or digit."""
    start = 0
    while True:
        i = text.find(form, start)
        if i < 0:
            return False
        j = i + len(form)
        before, after = text[max(0, i - 2) : i], text[j : j + 2]
        ok = True
        if form[0].isdigit() and before and (before[-1].isdigit() or (before[-1] == "." and before[:1].isdigit())):
            ok = False
        if form[0].isalpha() and before and before[-1].isalnum():
            ok = False
        if form[-1].isdigit() and after and (after[0].isdigit() or (after[0] in ".," and after[1:2].isdigit())):
            ok = False
        if form[-1].isalpha() and after and after[0].isalnum():
            ok = False
        if ok:
            return True
        start = i + 1


SHORT_GOLD_DIGITS = 2
"""A whole-number gold of at most this many digits ("2", "12", "012") leaks only where the text states it as
the answer (`_STATED_RES`): a bare occurrence of such a number is mostly not the answer ("Step 1", "x^2")."""

_STATED_NUM = r"(?P<n>\d+(?:\.\d+)?)(?!\d|[.,]\d)"
_SP = r"[^\S\n]"  # a space that does not end the line
_STATED_RES = (
    # \boxed{2}, \boxed{x = 2}, \boxed{$2$}, \boxed{2^\circ}
    re.compile(r"\\boxed" + _SP + r"*\{" + _SP + r"*\$?" + _SP + r"*(?:[A-Za-z]" + _SP + r"*=" + _SP + r"*)?-?"
               + _SP + r"*" + _STATED_NUM + _SP + r"*(?:\^\{?\\circ\}?|\\?%)?" + _SP + r"*\$?" + _SP + r"*\}"),
    # "the answer is 2", "Answer: 2", "final answer = $2$", "the result was **2**", "solution: \(2\)"
    re.compile(r"\b(?:answer|result|solution)s?" + _SP + r"{0,3}(?:(?:is|was|equals|=|:|of|should be|would be|must "
               r"be|will be|to be|becomes|comes out to)" + _SP + r"{0,3}){1,2}(?:[$*(\\]" + _SP + r"{0,2}){0,3}-?"
               + _SP + r"{0,2}" + _STATED_NUM, re.IGNORECASE),
    # "1 + 1 = 2." / "= -2" / "equals 2," / "is equal to 2" closing a computation: the number ends the line, the
    # text or the clause (a punctuation mark, a bracket or $ follows)
    re.compile(r"(?:=|\bequals\b|\bis equal to\b)" + _SP + r"{0,3}(?:[$*]" + _SP + r"{0,2}){0,2}-?" + _SP
               + r"{0,2}" + _STATED_NUM + r"(?=" + _SP + r"*(?:\Z|\n|[.,;:!?)\]}$*]|\\[)\]]))", re.IGNORECASE),
)


def _stated_numbers(text: str) -> set[str]:
    """Canonical numbers that `text` states as an answer or as the result of a computation (`_STATED_RES`)."""
    return {_canon_num(m.group("n")) for rx in _STATED_RES for m in rx.finditer(text)}


def _is_short_integer(num: str) -> bool:
    return "." not in num and len(num) <= SHORT_GOLD_DIGITS


def find_leaks(
    heuristics_and_summary: str,
    gold_answer: str,
    problem: str,
    common_numbers: Collection[str] = COMMON_NUMBERS,
) -> list[str]:
    """What of this problem's specifics the text quotes; [] when clean.

    1. The gold answer, always. A numeric gold ("123", "0123", "$1,000$", "30^\\circ", "x = 5") is compared as a
       number against every whole number token of the text, signs ignored: "123" leaks in "equals 123." and
       "123.0", not in "1234" or "1.235". A whole-number gold of 1 or 2 digits (SHORT_GOLD_DIGITS; "2", "12",
       "012") only where the text states it as the answer: "\\boxed{2}", "the answer is 2", "Answer: 2",
       "result: $2$", or "= 2" / "equals 2" closing a computation ("1 + 1 = 2."); not in "x^2", "Step 1:",
       "2 cases" (the same small numbers are everywhere in general advice). Any other gold is searched for after
       whitespace and LaTeX-spelling normalisation (\\dfrac = \\frac, braces around one character dropped), as a
       whole token; \\frac{a}{b} also as "a/b", \\sqrt{n} also as "√n" and "sqrt(n)". A non-numeric gold shorter
       than 2 characters ("A", "x") is not searched for.
    2. The problem's distinctive numbers, compared the same way: integers >= 10 except `common_numbers`
       (default COMMON_NUMBERS: 10, 90, 100, 180, 360, 1000), and non-integers with at least 2 significant
       digits (2.5, 0.25; not 0.5). Single digits are never distinctive.

    Returns the leaked items, gold first (as given, stripped), then problem numbers (canonical form, in
    problem order), without duplicates (a gold that leaked is not reported again as a problem number; a short gold
    that is also a distinctive problem number leaks as the latter wherever it occurs). `judge_analysis` applies it
    to the heuristics and the reflective summary (`leak_scope`).
    """
    found: list[str] = []
    text_numbers = set(_numbers(heuristics_and_summary))
    gold = gold_answer.strip()
    gold_num = _gold_number(gold) if gold else None
    if gold_num is not None:
        if _is_short_integer(gold_num):
            if gold_num in _stated_numbers(heuristics_and_summary):
                found.append(gold)
        elif gold_num in text_numbers:
            found.append(gold)
    elif gold:
        canon_text = _canon_tex(heuristics_and_summary)
        if any(_occurs(f, canon_text) for f in _gold_forms(gold)):
            found.append(gold)
    common = {_canon_num(c) for c in common_numbers}
    for num in dict.fromkeys(_numbers(problem)):
        if not (found and num == gold_num) and _is_distinctive(num, common) and num in text_numbers:
            found.append(num)
    return found


def leaks(heuristics_and_summary: str, gold_answer: str, problem: str) -> bool:
    """True when `find_leaks` finds anything."""
    return bool(find_leaks(heuristics_and_summary, gold_answer, problem))

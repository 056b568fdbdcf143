"""Meta-experiences as plain data: contrastive pairs, parsing M, leak checks, the experience log.

Everything here is a pure function over strings and lists (no torch, trl or transformers), so the MEL loop's
bookkeeping is tested on its own and reused by any engine adapter.

- `select_pairs`: which (correct, incorrect) rollouts of each group are analysed.
- `parse_meta_experience`: split the policy's analysis M into its sections (the paper's output format or our
  compact one); `MetaExperienceFormatError` when a required section is missing or empty.
- `leak_scope`: the part of an analysis the leak check reads.
- `find_leaks` / `leaks`: does a heuristic or reflective summary quote the gold answer or the problem's
  distinctive numbers (the paper forbids both)?
- `template_copies`: the sections of an analysis that only repeat the prompt's placeholder text.
- `retention_ratio`: kept / constructed, the paper's Fig. 9 quantity.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from melrl.method.prompts import (
    ANALYSIS_TEMPLATES,
    PAPER_FIELDS,
    PAPER_SECTION_FAILURE,
    PAPER_SECTION_HEURISTICS,
    PAPER_SECTION_SUCCESS,
    PAPER_SECTION_SUMMARY,
    SECTION_FAILURE,
    SECTION_HEURISTICS,
    SECTION_PATTERN,
    SECTION_SUCCESS,
    SECTION_SUMMARY,
    output_format,
)

__all__ = [
    "COMMON_NUMBERS",
    "MAX_PARSE_CHARS",
    "MetaExperienceFormatError",
    "Pair",
    "ParsedExperience",
    "find_leaks",
    "leak_scope",
    "leaks",
    "parse_meta_experience",
    "retention_ratio",
    "select_pairs",
    "template_copies",
]


# ----------------------------------------------------------------------------------------------------------
# Contrastive pairs
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One contrastive pair: `group` is the prompt's group index in the batch, `correct` and `incorrect` are
    global row indices into the batch of B = n_groups * group_size rollouts."""

    group: int
    correct: int
    incorrect: int


def _group_rng(seed: int, step: int, group: int) -> random.Random:
    # A hash of the text "seed:step:group" rather than Python's hash(): identical across processes,
    # interpreters and PYTHONHASHSEED, and unrelated streams for neighbouring groups or steps.
    digest = hashlib.sha256(f"melrl.select_pairs:{seed}:{step}:{group}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def select_pairs(
    correct: Sequence[bool], group_size: int, max_pairs_per_prompt: int, seed: int, step: int = 0
) -> list[Pair]:
    """Choose the contrastive pairs (y+, y-) of a batch of verified rollouts.

    `correct[r]` is the verifier's verdict on row r. Rows come in groups of `group_size` consecutive rows, one
    group per prompt (group g holds rows g*group_size ... (g+1)*group_size - 1). Only groups with at least one
    correct and one incorrect row give pairs.

    Rule, per group: shuffle the group's correct rows C (a of them) and incorrect rows I (b of them) with a
    `random.Random` seeded from (seed, step, group index); then take pairs k = 0, 1, 2, ... as

        (C[k mod a], I[(k + floor(k / L)) mod b]),   L = lcm(a, b),

    until `max_pairs_per_prompt` pairs are taken or all a*b pairs are used. The first min(a, b) pairs use
    distinct rollouts on both sides; at every prefix each correct rollout is used floor(k/a) or ceil(k/a) times
    and each incorrect one floor(k/b) or ceil(k/b) times, so pairs spread over as many distinct rollouts as
    possible before any is reused; and the a*b pairs are enumerated exactly once (block j, k in [jL, (j+1)L),
    covers the pairs whose index difference is j modulo gcd(a, b)), so all chosen pairs are distinct.

    The choice depends only on (seed, step, group index, the group's verdicts): it is deterministic, the same
    on every process that sees the same (gathered) verdicts, and independent of the other groups. Pairs are
    returned group by group, in the order above.

    Raises ValueError when group_size < 2, len(correct) is not a multiple of group_size,
    max_pairs_per_prompt < 1, or a verdict is not a bool (0/1).
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 to have contrastive pairs, got {group_size}")
    if max_pairs_per_prompt < 1:
        raise ValueError(f"max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
    if len(correct) % group_size:
        raise ValueError(
            f"len(correct)={len(correct)} is not a multiple of group_size={group_size}; "
            "pass the verdicts of whole groups"
        )
    verdicts = []
    for r, v in enumerate(correct):
        if v not in (0, 1):  # True/False, 0/1 and numpy bools; a float reward like 0.5 is a caller bug
            raise ValueError(f"correct[{r}]={v!r} is not a bool verdict (pass verifier verdicts, not rewards)")
        verdicts.append(bool(v))

    pairs: list[Pair] = []
    for g in range(len(verdicts) // group_size):
        rows = range(g * group_size, (g + 1) * group_size)
        pos = [r for r in rows if verdicts[r]]
        neg = [r for r in rows if not verdicts[r]]
        if not pos or not neg:
            continue
        rng = _group_rng(seed, step, g)
        rng.shuffle(pos)
        rng.shuffle(neg)
        a, b = len(pos), len(neg)
        lcm = a * b // _gcd(a, b)
        for k in range(min(max_pairs_per_prompt, a * b)):
            pairs.append(Pair(group=g, correct=pos[k % a], incorrect=neg[(k + k // lcm) % b]))
    return pairs


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


# ----------------------------------------------------------------------------------------------------------
# Parsing a meta-experience
# ----------------------------------------------------------------------------------------------------------

MAX_PARSE_CHARS = 50_000
"""Only the first this many characters of an analysis are scanned (bounds the work on runaway outputs)."""

_MAX_HEADING_LINE = 300  # longer lines are never headings

_FAILURE, _PATTERN, _SUCCESS, _SUMMARY, _HEURISTICS = (
    "failure_point",
    "cognitive_pattern",
    "success_factors",
    "reflective_summary",
    "heuristics",
)
_SECTION_TITLES = {
    _FAILURE: SECTION_FAILURE,
    _PATTERN: SECTION_PATTERN,
    _SUCCESS: SECTION_SUCCESS,
    _SUMMARY: SECTION_SUMMARY,
    _HEURISTICS: SECTION_HEURISTICS,
}
_REQUIRED = (_FAILURE, _SUCCESS, _SUMMARY, _HEURISTICS)

# Heading names: the compact prompt's (SECTION_*), the paper's Appendix C ones (PAPER_SECTION_*; its "Failure
# Point" and "Latent Cognitive Pattern" fields are the compact headings) and a few near spellings. Matched
# case-insensitively, longest first.
_ALIASES = {
    _FAILURE: [SECTION_FAILURE, PAPER_SECTION_FAILURE, "Failure Resolution Path", "Bifurcation Point"],
    _PATTERN: [SECTION_PATTERN, "Cognitive Pattern", "Latent Cognitive Defect"],
    _SUCCESS: [SECTION_SUCCESS, PAPER_SECTION_SUCCESS, "Success Factor Analysis"],
    _SUMMARY: [SECTION_SUMMARY, PAPER_SECTION_SUMMARY],  # words may be joined by spaces or "-"
    _HEURISTICS: [SECTION_HEURISTICS, PAPER_SECTION_HEURISTICS],
}


def _alias_pattern(name: str) -> str:
    words = re.split(r"[\s\-]+", name.strip())
    return r"[ \t\-]*".join("(?:&|and)" if w == "&" else re.escape(w) for w in words)


_ALIAS_TO_KEY: list[tuple[str, str]] = sorted(
    ((alias, key) for key, names in _ALIASES.items() for alias in names), key=lambda t: -len(t[0])
)
_HEADING_RE = re.compile(
    # prefix: indentation / quote, markdown '#', a bullet, bold/italic markers, a number "1." "(2)" "IV."
    r"(?P<prefix>[ \t>]{0,8}(?:#{1,6}[ \t]*)?(?:[-+\u2022][ \t]+)?(?:[*_]{1,3}[ \t]*)?"
    r"(?:(?:\(?\d{1,2}[.):]|[IVX]{1,4}[.)])[ \t]*)?(?:[*_]{1,3}[ \t]*)?)"
    r"(?:" + "|".join(f"(?P<k{i}>{_alias_pattern(a)})" for i, (a, _) in enumerate(_ALIAS_TO_KEY)) + r")"
    r"s?(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_DASHES = ("-", "\u2013", "\u2014")  # a separator only when followed by a space ("Heuristics-based" is prose)
_RULE_RE = re.compile(r"[ \t]*(?:-{3,}|\*{3,}|_{3,}|={3,}|`{3,}[A-Za-z]*)[ \t]*")
_BARE_BULLET_RE = re.compile(r"[ \t]*(?:[-*+\u2022]|\d{1,3}[.)]|\(\d{1,3}\))[ \t]*")
_BULLET_RE = re.compile(r"[ \t]{0,12}(?:[-*+\u2022]|\d{1,3}[.)]|\(\d{1,3}\))[ \t]+(?P<body>\S.*)")


def _match_heading(line: str) -> tuple[str, str] | None:
    """(section key, inline content) when `line` is a section heading, else None."""
    if len(line) > _MAX_HEADING_LINE:
        return None
    m = _HEADING_RE.match(line)
    if m is None:
        return None
    key = _ALIAS_TO_KEY[int(m.lastgroup[1:])][1]  # the alias group is the last one to close
    hashed = "#" in m.group("prefix")
    rest = line[m.end() :].strip()
    for _ in range(3):  # "(Internalized Experience) (Mandatory)"
        if rest.startswith("(") and ")" in rest:
            rest = rest[rest.index(")") + 1 :].strip()
    rest = rest.lstrip("*_").strip()
    if rest[:1] in (":", "\uff1a") or (rest[:1] in _DASHES and rest[1:2] in ("", " ", "\t")):
        return key, rest[1:].strip().lstrip("*_").strip()
    if not rest or hashed:  # a bare heading line; a markdown heading may carry more title words
        return key, ""
    return None  # prose that starts with a section name ("Success factors were ...") is content


_FIELD_NAMES = {name.lower(): name for names in PAPER_FIELDS.values() for name in names}
_FIELD_RE = re.compile(
    # "• **Reasoning Pivot (If applicable):** text", "Review: text", "- *Insight*: text"
    r"[ \t>]{0,8}(?:[-+*\u2022][ \t]+)?(?:[*_]{1,3}[ \t]*)?(?P<name>"
    + "|".join(re.escape(n) for n in sorted(_FIELD_NAMES, key=len, reverse=True))
    + r")(?:[ \t]*\([^()\n]{0,40}\))?[ \t]*[*_]{0,3}[ \t]*[:\uff1a][ \t]*[*_]{0,3}(?P<rest>.*)",
    re.IGNORECASE,
)


def _fields(key: str, content: str) -> dict[str, str]:
    """The paper's labelled fields (prompts.PAPER_FIELDS) found in the content of part `key`: a field runs from its
    label line to the next label; fields left empty are omitted."""
    names = PAPER_FIELDS.get(key, ())
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in content.splitlines():
        m = _FIELD_RE.match(line)
        name = _FIELD_NAMES[m.group("name").lower()] if m else None
        if name in names:
            current = found.setdefault(name, [])
            current.clear()
            current.append(m.group("rest").strip())
        elif current is not None:
            current.append(line.strip())
    return {name: text for name in names if name in found and (text := "\n".join(found[name]).strip())}


@dataclass
class ParsedExperience:
    """The sections of one meta-experience M. `cognitive_pattern` may be empty; the rest are not. `details` holds
    the labelled fields of the paper's output format found inside a section ("Reasoning Pivot", "Robustness
    Factor", "Reason for Effectiveness" in the success factors; "Review", "Insight", "Action" in the reflective
    summary), each also part of its section's text."""

    failure_point: str
    cognitive_pattern: str
    success_factors: str
    reflective_summary: str
    heuristics: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """A canonical markdown text of M under the prompt's headings (e.g. for the replay prompt)."""
        parts = [f"## {SECTION_FAILURE}\n{self.failure_point}"]
        if self.cognitive_pattern:
            parts.append(f"## {SECTION_PATTERN}\n{self.cognitive_pattern}")
        parts.append(f"## {SECTION_SUCCESS}\n{self.success_factors}")
        parts.append(f"## {SECTION_SUMMARY}\n{self.reflective_summary}")
        parts.append(f"## {SECTION_HEURISTICS}\n" + "\n".join(f"- {h}" for h in self.heuristics))
        return "\n".join(parts)


class MetaExperienceFormatError(ValueError):
    """The analysis text is not a usable meta-experience. `missing` and `empty` name the sections at fault
    (prompt titles, e.g. "Heuristics"); `str(err)` is a short reason."""

    def __init__(self, reason: str, missing: Sequence[str] = (), empty: Sequence[str] = ()):
        super().__init__(reason)
        self.reason = reason
        self.missing = tuple(missing)
        self.empty = tuple(empty)


def _split_sections(text: str) -> dict[str, str]:
    """Section key -> content. Preamble before the first heading is dropped; when a heading repeats, the last
    non-empty occurrence wins (a model that echoes the template or repeats itself keeps its final version, and
    the paper's "Failure Resolution Path" group heading, empty itself, gives way to its "Failure Point:")."""
    sections: dict[str, str] = {}
    current: str | None = None
    buf: list[str] = []

    def close() -> None:
        if current is not None:
            content = "\n".join(ln for ln in buf if not _RULE_RE.fullmatch(ln)).strip()
            if content or current not in sections:
                sections[current] = content

    for line in text.splitlines():
        heading = _match_heading(line)
        if heading is None:
            if current is not None:
                buf.append(line.rstrip())
            continue
        close()
        current, inline = heading
        buf = [inline] if inline else []
    close()
    return sections


def _split_heuristics(content: str) -> list[str]:
    """One item per bullet (continuation lines join their bullet); one per line when there are no bullets."""
    lines = ["" if _BARE_BULLET_RE.fullmatch(ln) else ln for ln in content.splitlines()]
    if not any(_BULLET_RE.match(ln) for ln in lines):
        return [ln.strip() for ln in lines if ln.strip()]
    items: list[str] = []
    joinable = False  # the previous line was part of an item, with no blank line in between
    for ln in lines:
        m = _BULLET_RE.match(ln)
        if m:
            items.append(m.group("body").strip())
            joinable = True
        elif not ln.strip():
            joinable = False
        elif items and joinable:
            items[-1] = f"{items[-1]} {ln.strip()}"
        elif items:  # a paragraph after a blank line
            items.append(ln.strip())
            joinable = True
        # lines before the first bullet ("Here are my heuristics:") are dropped
    return [it for it in items if it]


def _norm_ws(s: str) -> str:
    return " ".join(s.split()).lower()


def _template_placeholders() -> tuple[dict[str, set[str]], set[str]]:
    """The description lines each analysis prompt (paper and compact) shows under each heading, normalised; an M
    that only echoes them is rejected."""
    placeholders: dict[str, set[str]] = {}
    heuristic_placeholders: set[str] = set()
    for name in ANALYSIS_TEMPLATES:
        sections = _split_sections(output_format(name))
        heuristic_placeholders |= {_norm_ws(h) for h in _split_heuristics(sections.pop(_HEURISTICS, ""))}
        for key, text in sections.items():
            placeholders.setdefault(key, set()).add(_norm_ws(text))
    return placeholders, heuristic_placeholders


_PLACEHOLDERS, _HEURISTIC_PLACEHOLDERS = _template_placeholders()

_LINE_PREFIX_RE = re.compile(r"[ \t>]*(?:(?:[-+*\u2022]|\d{1,2}[.)]|\(\d{1,2}\)|#{1,6})[ \t]+)?")
_PARENTHETICAL_RE = re.compile(r"\([^()\n]{1,60}\)")


def _line_norm(line: str) -> str:
    """A line without its bullet or number, emphasis markers and whitespace differences, lower-cased: how a copied
    line of the prompt is recognised however the model decorates it ("• **Review:** ..." = "- Review: ...")."""
    line = _LINE_PREFIX_RE.sub("", line, count=1)
    return _norm_ws(line.replace("*", "").replace("_", ""))


def _template_placeholder_lines() -> frozenset[str]:
    """Every line of the analysis prompts' output formats (their description and example lines, the text after a
    field label, the heading lines' parenthetical notes such as "(Mandatory for correct samples)"), as `_line_norm`
    gives them. A section made only of such lines copies the prompt, in whole or in part; a forced skeleton
    (`analysis_guidance: sections`) invites exactly that."""
    lines: set[str] = set()
    for name in ANALYSIS_TEMPLATES:
        fmt = output_format(name)
        for line in fmt.splitlines()[1:]:
            heading = _match_heading(line)
            if heading is not None and not heading[1]:  # a heading line: its parenthetical notes only
                notes = _PARENTHETICAL_RE.findall(line)
                lines.update(_line_norm(n) for n in notes)
                lines.add(_line_norm(" ".join(notes)))
            else:
                lines.add(_line_norm(line))
        for content in _split_sections(fmt).values():
            lines.update(_line_norm(line) for line in content.splitlines())
    return frozenset(line for line in lines if line)


_PLACEHOLDER_LINES = _template_placeholder_lines()


def _copies_template(content: str) -> bool:
    """Whether a section's text is only lines of the prompt's output format (or nothing)."""
    return all(_line_norm(line) in _PLACEHOLDER_LINES for line in content.splitlines() if _line_norm(line))


def _is_placeholder_section(key: str, content: str) -> bool:
    """Whether a section only repeats the prompt: its description verbatim, or only lines of its output format."""
    return _norm_ws(content) in _PLACEHOLDERS.get(key, ()) or _copies_template(content)


def template_copies(text: str) -> list[str]:
    """The sections (prompt titles, e.g. "Success Factors") whose text only repeats the analysis prompt's
    placeholder text: what `parse_meta_experience` counts as empty although the policy wrote something there.
    Reads the first MAX_PARSE_CHARS characters, as the parser does."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    sections = _split_sections(text[:MAX_PARSE_CHARS])
    return [_SECTION_TITLES[key] for key, content in sections.items()
            if content.strip() and _is_placeholder_section(key, content)]


def parse_meta_experience(text: str) -> ParsedExperience:
    """Parse the policy's analysis into its sections.

    Headings are found line by line, tolerantly: markdown (`#`..`######`), bold or italic markers, bullets,
    numbering ("1.", "(2)", "IV."), any case, an optional parenthetical ("(Internalized Experience)"), and an
    optional ":" (or dash) after which the section's text may start on the same line. Both the prompt's names
    (prompts.SECTION_*) and the paper's (prompts.PAPER_SECTION_*: "Failure Resolution Path & Error Pattern
    Recognition" with its "Failure Point:" and "Latent Cognitive Pattern:" fields, "Analysis of Success Factors",
    "First-Person Reflective Summary", "Subject Heuristics (Internalized Experience)") are accepted. A line that
    starts with a section name but goes on without a separator ("Success factors were ...") is content, not a
    heading, unless it is a markdown `#` heading. Text before the first heading is ignored; a repeated heading's
    last non-empty occurrence wins; horizontal rules and code fences are dropped.

    The paper's labelled fields inside the success factors and the summary ("Reasoning Pivot:", "Review:", ...)
    are also returned one by one in `details` (prompts.PAPER_FIELDS).

    Heuristics are split into one rule per bullet ("-", "*", "•", "1.", "(1)"; continuation lines join their
    bullet) or, without bullets, one per non-empty line.

    Failure Point, Success Factors, Reflective Summary and at least one heuristic are required (the latent
    cognitive pattern is optional); a section that only repeats the prompt's placeholder text counts as empty,
    as does one made only of lines copied from the prompt's output format, however bulleted or emphasised
    (`_copies_template`), and a heuristic that is such a line is dropped.
    Only the first MAX_PARSE_CHARS characters are read.

    Raises MetaExperienceFormatError (a ValueError) and nothing else for any str input; TypeError for non-str.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    sections = _split_sections(text[:MAX_PARSE_CHARS])
    for key in sections:
        if _is_placeholder_section(key, sections[key]):
            sections[key] = ""
    heuristics = [
        h for h in _split_heuristics(sections.get(_HEURISTICS, ""))
        if _norm_ws(h) not in _HEURISTIC_PLACEHOLDERS and _line_norm(h) not in _PLACEHOLDER_LINES
    ]

    missing = [_SECTION_TITLES[k] for k in _REQUIRED if k not in sections]
    empty = [
        _SECTION_TITLES[k]
        for k in _REQUIRED
        if k in sections and not (heuristics if k == _HEURISTICS else sections[k])
    ]
    if missing or empty:
        reasons = []
        if missing:
            reasons.append("missing section" + ("s" if len(missing) > 1 else "") + ": " + ", ".join(missing))
        if empty:
            reasons.append("empty section" + ("s" if len(empty) > 1 else "") + ": " + ", ".join(empty))
        raise MetaExperienceFormatError("; ".join(reasons), missing=missing, empty=empty)
    return ParsedExperience(
        failure_point=sections[_FAILURE],
        cognitive_pattern=sections.get(_PATTERN, ""),
        success_factors=sections[_SUCCESS],
        reflective_summary=sections[_SUMMARY],
        heuristics=heuristics,
        details={name: text for key in PAPER_FIELDS for name, text in _fields(key, sections[key]).items()},
    )


def leak_scope(text: str) -> str | None:
    """The part of an analysis that the paper forbids to name the problem's specifics in: the text of its
    Reflective Summary and Heuristics sections (either heading spelling), parsed or not; None when it has
    neither section. Like the parser, reads only the first MAX_PARSE_CHARS characters."""
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    sections = _split_sections(text[:MAX_PARSE_CHARS])
    if _SUMMARY not in sections and _HEURISTICS not in sections:
        return None
    return sections.get(_SUMMARY, "") + "\n" + sections.get(_HEURISTICS, "")


# ----------------------------------------------------------------------------------------------------------
# Leak check
# ----------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------
# Retention
# ----------------------------------------------------------------------------------------------------------


def retention_ratio(kept: int, constructed: int) -> float:
    """Kept / constructed meta-experiences (paper Fig. 9); 0.0 when none was constructed."""
    if kept < 0 or constructed < 0 or kept > constructed:
        raise ValueError(f"need 0 <= kept <= constructed, got kept={kept}, constructed={constructed}")
    return kept / constructed if constructed else 0.0

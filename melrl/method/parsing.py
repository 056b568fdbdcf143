"""Parsing a meta-experience: the sections of the policy's analysis M.

Pure functions over strings (no torch, trl or transformers).

- `parse_meta_experience`: split an analysis into its sections (the paper's output format or our compact one);
  `MetaExperienceFormatError` when a required section is missing or empty.
- `leak_scope`: the part of an analysis the leak check (`melrl.method.leaks`) reads.
- `template_copies`: the sections of an analysis that only repeat the prompt's placeholder text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
    "MAX_PARSE_CHARS",
    "MetaExperienceFormatError",
    "ParsedExperience",
    "leak_scope",
    "parse_meta_experience",
    "template_copies",
]



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

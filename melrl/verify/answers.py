"""Final-answer extraction and cheap pre-screening of model output (pure Python, no sympy).

Everything here is bounded: only the last `MAX_SCAN_CHARS` characters of a completion are scanned, answers longer
than `MAX_ANSWER_CHARS` are dropped, and no function raises on any `str` input.
"""

from __future__ import annotations

import math
import re

MAX_SCAN_CHARS = 10_000
MAX_ANSWER_CHARS = 1_000
MAX_NESTING = 20  # brackets of any kind
MAX_TOWER = 2  # a^{b^{c}} is allowed, a^{b^{c^{d}}} is not
MAX_EXPONENT = 100_000  # largest integer exponent
MAX_POWER_DIGITS = 100_000  # largest integer power, in decimal digits
MAX_FACTORIAL = 1_000
MAX_POWERS = 100  # "^" signs in one answer
MAX_FACTORIALS = 20  # "!" signs in one answer

ANSWER_FORMATS = ("auto", "boxed", "answer_line", "last_number")

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_LINE = re.compile(r"answer\s*:(.*)", re.IGNORECASE)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:(?:,|\{,\}|\\,|\\!|\\ |\\thinspace ?| )\d{3})+(?:\.\d+)?")
_SEPARATORS = re.compile(r"\{,\}|\\,|\\!|\\ |\\thinspace ?|[, ]")
_INTEGER = re.compile(r"[+-]?\d{1,4000}")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
# A time of day: "4:30", "16:05", "4:30 p.m.", "4:30PM" (h:mm, optional am/pm).
_TIME = re.compile(r"(?<![\d:.])(\d{1,2}):([0-5]\d)(?![\d:])(?:\s*([ap])\.?\s*m\b\.?)?", re.IGNORECASE)
_TIME_ONLY = re.compile(r"\s*" + _TIME.pattern + r"\s*", re.IGNORECASE)
_NUMBER_OR_TIME = re.compile(_TIME.pattern + "|" + _NUMBER.pattern, re.IGNORECASE)
# Final-answer statements other than \boxed and "Answer:" lines: GSM8K's "#### 18", a line "A: 18", "The answer is 18".
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_A_LINE = re.compile(r"^[ \t*]*A[ \t]*:(?:\*\*)?[ \t]*([^\n]*)", re.MULTILINE)
_ANSWER_IS = re.compile(r"\banswer\s+is\s*:?[ \t]*([^\n]*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)")
# A leading number, optionally in dollars, then a percent sign or up to four words of unit ("$18", "18 dollars",
# "25%", "7 more apples"); a word is two letters or more and follows a space, so "2x" and "2 x" stay expressions.
_LEADING_NUMBER = re.compile(
    r"(?:\\?\$\s*)?(-?\d+(?:,\d{3})*(?:\.\d+)?)\$?"
    r"(?:\s*\\?%|\s+(?!(?:thousand|million|billion)\b)[A-Za-z][A-Za-z'’.-]+(?:\s+[A-Za-z][A-Za-z'’.-]*){0,3})?",
    re.IGNORECASE,
)
_PERCENT = re.compile(
    r"(-?\d+(?:,\d{3})*(?:\.\d+)?)\s*(?:\\[,;! ]\s*)?(?:\\?%|\\(?:text|mathrm)\s*\{\s*(?:\\?%|percent)\s*\}|percent)",
    re.IGNORECASE,
)
_CLAUSE_END = re.compile(r"\s*[,;(]\s")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# A box the reader is to fill in: question marks, blanks, dots, an empty square, the word "answer", nothing.
_PLACEHOLDER = re.compile(
    r"(?:[\s?_.~]|\\[_ ,;:!]|\\(?:[lcv]?dots|square|Box|blacksquare|qquad|quad|underline)\b)*"
    r"|(?:the |your |final |correct )*answer(?: here)?|ans|blank",
    re.IGNORECASE,
)
_PLACEHOLDER_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{|[{}$]")


def extract_answer(text: str, answer_format: str = "auto") -> str | None:
    """The final answer of a completion, or None.

    "boxed": content of the last ``\\boxed{}``/``\\fbox{}`` that is not a placeholder (``\\boxed{?}``, see
    `is_placeholder`); "answer_line": the last ``Answer: ...`` line; "last_number": the last number (or time of day)
    in the text (for very small models that answer in prose, with the `short` template). "auto": that boxed answer
    if there is one; otherwise whichever final-answer statement comes last: an ``Answer: ...`` line, GSM8K's
    ``#### 18``, a line ``A: 18`` or "the answer is 18". Never a bare number in prose, so that an unfinished
    completion has no answer (nor one whose answer is only in words, such as a sentence after a program's output).
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    if not isinstance(text, str) or not text:
        return None
    tail = text[-MAX_SCAN_CHARS:]
    answer = None
    if answer_format in ("boxed", "auto"):
        answer = last_boxed(tail, skip_placeholders=True)
    if answer is None and answer_format == "answer_line":
        answer = last_answer_line(tail)
    if answer is None and answer_format == "auto":
        answer = last_statement(tail)
    if answer_format == "last_number":
        answer = last_number(tail)
    if answer is None or not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    return answer


def last_boxed(text: str, *, skip_placeholders: bool = False) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed 5``); None if absent or unbalanced.
    With `skip_placeholders`, boxes holding a placeholder (`is_placeholder`) are passed over for earlier ones."""
    start = _last_box_start(text, len(text))
    while start >= 0:
        cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
        i = start + len(cmd)
        if i < len(text) and text[i].isalpha():  # \boxedfoo is some other command
            start = _last_box_start(text, start)
            continue
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _match_brace(text, i)
            if end < 0:
                return None
            content = text[i + 1 : end].strip()
        elif cmd == "\\boxed" and i > start + len(cmd):  # "\boxed 5": one token, ends at "$" or whitespace
            content = re.split(r"[\s$]", text[i:], maxsplit=1)[0]
        else:
            return None
        for inner_cmd in _BOX_COMMANDS:  # \boxed{\boxed{5}}
            if content.startswith(inner_cmd + "{") and _match_brace(content, len(inner_cmd)) == len(content) - 1:
                content = last_boxed(content) or ""
                break
        if skip_placeholders and is_placeholder(content):
            start = _last_box_start(text, start)
            continue
        return content or None
    return None


def is_placeholder(content: str) -> bool:
    """Whether a box's content stands for an answer still to be given ("?", "\\_\\_", "\\square", "\\ldots",
    "\\text{answer}", nothing): what a question or an instruction shows, copied into the output."""
    return _PLACEHOLDER.fullmatch(_PLACEHOLDER_WRAPPER.sub("", content)) is not None


def last_answer_line(text: str) -> str | None:
    """Content of the last line containing ``Answer: ...`` (DAPO format), with ``$``/``**`` wrappers stripped."""
    for line in reversed(text.splitlines()):
        matches = list(_ANSWER_LINE.finditer(line))
        if not matches:
            continue
        content = _clean_answer_line(matches[-1].group(1))
        if content:
            return content
    return None


def last_statement(text: str) -> str | None:
    """The answer of the last final-answer statement: an ``Answer: ...`` line, ``#### 18``, a line ``A: 18`` or
    "the answer is 18" (GSM8K styles). "$18", "18 dollars" and "18." give "18"; "4:30 p.m." stays a time."""
    candidates = []  # (position, answer)
    for line_start, line in _lines_with_offsets(text):
        matches = list(_ANSWER_LINE.finditer(line))
        if matches:
            content = _clean_answer_line(matches[-1].group(1))
            if content:
                candidates.append((line_start + matches[-1].start(), _statement_answer(content) or content))
    for pattern in (_HASHES, _A_LINE, _ANSWER_IS):
        for m in reversed(list(pattern.finditer(text))):
            content = m.group(1)
            if pattern is _ANSWER_IS:
                content = _SENTENCE_END.split(content, maxsplit=1)[0]
            answer = _statement_answer(content)
            if answer:
                candidates.append((m.start(), answer))
                break
    return max(candidates)[1] if candidates else None


def last_number(text: str) -> str | None:
    """The last number written in the text ("... so 1,200 apples." gives "1,200"; "at 4:30 pm." gives "4:30 pm"),
    or None."""
    last = None
    for last in _NUMBER_OR_TIME.finditer(text):
        pass
    return last.group(0).rstrip(".") if last else None


def time_of_day(answer: str) -> tuple[int, bool] | None:
    """(minutes past midnight, whether am/pm or a 24-hour hour fixes the half of the day) of an answer that is a
    time of day ("4:30 p.m." gives (990, True), "4:30" (270, False), "16:30" (990, True)); None otherwise."""
    m = _TIME_ONLY.fullmatch(_unwrap(answer.strip()).replace("\\text", "").replace("{", "").replace("}", ""))
    if not m:
        return None
    hour, minute, half = int(m.group(1)), int(m.group(2)), (m.group(3) or "").lower()
    if hour > 23 or (half and not 1 <= hour <= 12):
        return None
    if half:
        return (hour % 12 + (12 if half == "p" else 0)) * 60 + minute, True
    return hour * 60 + minute, hour == 0 or hour > 12


def same_time(a: str, b: str) -> bool | None:
    """Whether two answers are the same time of day; None when either is not a time. A time without am/pm
    ("4:30") matches both halves of the day ("4:30 a.m." and "4:30 p.m.", "16:30")."""
    ta, tb = time_of_day(a), time_of_day(b)
    if ta is None or tb is None:
        return None
    if ta[1] and tb[1]:
        return ta[0] == tb[0]
    return ta[0] % 720 == tb[0] % 720


def normalize_answer(answer: str) -> str:
    """Strip math-mode wrappers and thousands separators ("1,000" and "1\\,000" become "1000")."""
    s = _unwrap(answer.strip())
    if _THOUSANDS.fullmatch(s):
        s = _SEPARATORS.sub("", s)
    return s


def percent_number(answer: str) -> str | None:
    """The number of an answer that is a percentage ("35\\%", "35.0 %", "35\\text{ percent}" give "35", "35.0"),
    else None."""
    m = _PERCENT.fullmatch(answer.strip())
    return normalize_answer(m.group(1)) if m else None


def as_integer(answer: str) -> int | None:
    """The integer a normalised answer denotes when it is a plain integer literal, else None."""
    if _INTEGER.fullmatch(answer):
        return int(answer)
    return None


def prescreen(answer: str) -> str | None:
    """Why an answer is too dangerous to hand to sympy (a short reason), or None when it may be parsed.

    Catches in microseconds what would otherwise cost a timeout: very long or deeply nested input, unbalanced
    braces, exponent towers, huge powers and huge or nested factorials.
    """
    if len(answer) > MAX_ANSWER_CHARS:
        return "too_long"
    depth = max_depth = 0
    braces = 0
    i, n = 0, len(answer)
    while i < n:
        c = answer[i]
        if c == "\\":
            i += 2
            continue
        if c in "{([":
            depth += 1
            max_depth = max(max_depth, depth)
        elif c in "})]":
            depth = max(0, depth - 1)
        if c == "{":
            braces += 1
        elif c == "}":
            braces -= 1
            if braces < 0:
                return "unbalanced"
        i += 1
    if braces:
        return "unbalanced"
    if max_depth > MAX_NESTING:
        return "too_deep"
    if "^" in answer:
        reason = _check_powers(answer)
        if reason:
            return reason
    if "!" in answer:
        return _check_factorials(answer)
    return None


def _last_box_start(text: str, before: int) -> int:
    """Index of the last box command starting before `before`, or -1."""
    return max(text.rfind(cmd, 0, before) for cmd in _BOX_COMMANDS)


def _match_brace(text: str, open_at: int) -> int:
    """Index of the brace closing the one at `open_at`, or -1. Escaped braces (\\{, \\}) do not count."""
    depth = 0
    i, n = open_at, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _match_open(text: str, close_at: int) -> int:
    """Index of the bracket opening the one at `close_at`, or -1 (scanning backwards, any bracket kind)."""
    depth = 0
    for i in range(close_at, -1, -1):
        c = text[i]
        if i > 0 and text[i - 1] == "\\":
            continue
        if c in ")}]":
            depth += 1
        elif c in "({[":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _clean_answer_line(s: str) -> str:
    s = s.strip()
    while s.startswith("**"):
        s = s[2:].lstrip()
    while s.endswith("**"):
        s = s[:-2].rstrip()
    s = s.rstrip(".").rstrip()
    s = _unwrap(s).rstrip(".").rstrip()
    if any(cmd in s for cmd in _BOX_COMMANDS):
        boxed = last_boxed(s)
        if boxed:
            s = boxed
    return s


def _lines_with_offsets(text: str):
    start = 0
    for line in text.split("\n"):
        yield start, line
        start += len(line) + 1


def _statement_answer(content: str) -> str | None:
    """The answer in what follows a final-answer marker: a time of day, a number with its unit or currency
    dropped, or else the whole (cleaned) expression."""
    s = _clean_answer_line(content)
    if not s:
        return None
    time = _TIME.match(s)
    if time and _TIME_ONLY.fullmatch(s):
        return time.group(0).strip()
    s = s.rstrip(".!").rstrip()
    number = _LEADING_NUMBER.fullmatch(s)
    if number is None:  # "18, because ..."
        number = _LEADING_NUMBER.match(s)
        if number and not _CLAUSE_END.match(s, number.end()):
            number = None
    if number:
        return number.group(1)
    return s


def _unwrap(s: str) -> str:
    for left, right in _WRAPPERS:
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            inner = s[len(left) : -len(right)].strip()
            if left not in inner:  # "$a$ and $b$" is not one wrapped expression
                return inner
    return s


def _check_powers(s: str) -> str | None:
    if s.count("^") > MAX_POWERS:
        return "too_many_powers"
    if _tower_height(s, 0, len(s)) > MAX_TOWER:
        return "tower"
    i = s.find("^")
    while i >= 0:
        # The exponent of a chain a^b^c is b^c, whichever way a parser associates it.
        exp_text, end = _operand(s, i + 1, len(s))
        while end < len(s) and s[end] == "^":
            more, end = _operand(s, end + 1, len(s))
            exp_text += "^{" + more + "}"
        exponent = _log10_value(exp_text)
        if exponent is not None:
            if exponent > math.log10(MAX_EXPONENT):
                return "huge_exponent"
            j = i
            while j > 0 and s[j - 1].isspace():
                j -= 1
            k = j
            while k > 0 and s[k - 1].isdigit():
                k -= 1
            if k < j and not (k > 0 and s[k - 1] == "."):
                if _log10_int(s[k:j]) * 10**exponent > MAX_POWER_DIGITS:
                    return "huge_power"
        i = s.find("^", i + 1)
    return None


def _tower_height(s: str, lo: int, hi: int) -> int:
    """Height of the tallest exponent tower in s[lo:hi]; chains like a^b^c count as towers."""
    best = chain = 0
    after_exponent = False
    i = lo
    while i < hi:
        c = s[i]
        if c == "^":
            operand, end = _operand(s, i + 1, hi)
            height = 1 + (_tower_height(operand, 0, len(operand)) if len(operand) > 1 else 0)
            chain = chain + height if after_exponent else height
            best = max(best, chain)
            after_exponent = True
            i = end
            continue
        if c == "{":
            end = _match_brace(s, i)
            if end < 0 or end >= hi:
                end = hi - 1
            best = max(best, _tower_height(s, i + 1, end))
            i = end + 1
        elif c == "\\":
            i += 2
        elif not c.isspace():
            i += 1
        else:
            i += 1
            continue
        after_exponent = False
    return best


def _operand(s: str, i: int, hi: int) -> tuple[str, int]:
    """The operand starting at i (a braced group, a digit run or one character) and the index after it."""
    while i < hi and s[i].isspace():
        i += 1
    if i >= hi:
        return "", hi
    if s[i] == "{":
        end = _match_brace(s, i)
        if end < 0 or end >= hi:
            return s[i + 1 : hi], hi
        return s[i + 1 : end], end + 1
    m = re.compile(r"-?\d+|\\[A-Za-z]+|.").match(s, i, hi)
    return m.group(0), m.end()


def _log10_value(text: str) -> float | None:
    """log10 of |value| of an integer or integer tower ("9", "10^{7}", "9^9^9"), None for anything else."""
    t = text.replace(" ", "").replace("{", "").replace("}", "").lstrip("+-")
    parts = t.split("^")
    if not t or not all(p.isdigit() for p in parts):
        return None
    value = None
    for p in reversed(parts):  # right-associative: a^(b^c)
        if value is None:
            value = _log10_int(p)
        elif value > 300:
            return math.inf
        else:
            value = _log10_int(p) * 10**value
    return value


def _log10_int(digits: str) -> float:
    digits = digits.lstrip("0") or "0"
    if len(digits) <= 300:
        return math.log10(max(int(digits), 1))
    return len(digits) - 1 + math.log10(int(digits[:15]) / 10**14)


def _check_factorials(s: str) -> str | None:
    if s.count("!") > MAX_FACTORIALS:
        return "too_many_factorials"
    i = s.find("!")
    while i >= 0:
        j = i - 1
        while j >= 0 and s[j] == "!":  # n!! is a double factorial of n
            j -= 1
        operand = ""
        if j >= 0 and s[j].isdigit():
            k = j
            while k > 0 and s[k - 1].isdigit():
                k -= 1
            operand = s[k : j + 1]
        elif j >= 0 and s[j] in ")}]":
            k = _match_open(s, j)
            group = s[k + 1 : j] if k >= 0 else s[:j]
            if "!" in group or "^" in group:
                return "nested_factorial"
            operand = group.strip()
        if operand.isdigit() and (len(operand) > 6 or int(operand) > MAX_FACTORIAL):
            return "huge_factorial"
        i = s.find("!", i + 1)
    return None

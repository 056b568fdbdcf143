"""Grammar-guided analyses (`analysis_guidance: sections`; ours, beyond the paper).

The analysis prompt asks for a fixed output format: the paper's four numbered headings (Appendix C's "Output
Format"), or the compact prompt's five `##` headings. Under `analysis_guidance: sections` the policy's analysis is
constrained to that skeleton: the prompt's heading lines, verbatim and in order, each on its own line, with free
text in between. The constraint is one regular expression (`skeleton_regex`):

    HEADING_1 \\n BODY \\n HEADING_2 \\n BODY ... \\n HEADING_n \\n BODY

where BODY is any text (line breaks included) that starts with a non-space character and is at most
`section_chars` characters long, so that a section cannot take the budget of the ones after it. The budget is
counted in characters, as a proxy for tokens (a grammar over text cannot count tokens): the analysis token
budget times CHARS_PER_TOKEN (3, below the 4.5 characters per token of the paper's prompt with SmolLM2's
tokenizer), less the headings' characters, shared equally by the sections. Text that tokenizes more
densely (numbers, LaTeX) can still run out of tokens before the last section; such an analysis is truncated as
an unguided one is.

The same regular expression serves both engines: vLLM's structured outputs take it as it is
(`structured_outputs_regex`), and on the transformers path xgrammar (the library vLLM uses by default) compiles it
against the tokenizer for its logits processor (`SectionGuidance.logits_processor`). The grammar ends after the last
section, so a guided analysis that fits its budget always ends with an end token.

Everything but `compile_regex` / `SectionGuidance.logits_processor` is plain string work; xgrammar is imported
only there (`pip install -e '.[guidance]'`).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field

from melrl.method.prompts import output_format

GUIDANCE_MODES = ("none", "sections")
"""`analysis_guidance` settings: `none` (the paper: free generation) or `sections` (ours: the prompt's skeleton)."""

CHARS_PER_TOKEN = 3
"""Characters per token assumed when a section's token budget is expressed in characters."""

MIN_SECTION_CHARS = 16
"""The smallest section body the grammar allows, however small the analysis budget."""

INSTALL_HINT = "pip install -e '.[guidance]'"

_HEADING_LINE = re.compile(r"(?:\d\. |## )")
_REGEX_SPECIAL = set("\\^$.|?*+()[]{}")


def skeleton(analysis_prompt: str = "paper") -> tuple[str, ...]:
    """The heading lines of the analysis prompt's output format, verbatim and in order: the paper's numbered
    lines ("1. Failure Resolution Path & Error Pattern Recognition (Mandatory for incorrect samples)", ...) or the
    compact prompt's `## ` lines."""
    return tuple(line.strip() for line in output_format(analysis_prompt).splitlines() if _HEADING_LINE.match(line))


def section_chars(max_new_tokens: int, analysis_prompt: str = "paper") -> int:
    """The longest section body (characters) for an analysis of `max_new_tokens` tokens: the budget at
    CHARS_PER_TOKEN characters a token, less the headings and their line breaks, shared by the sections;
    at least MIN_SECTION_CHARS."""
    headings = skeleton(analysis_prompt)
    fixed = sum(len(h) + 2 for h in headings)  # the heading and the line breaks around it
    return max(MIN_SECTION_CHARS, (max_new_tokens * CHARS_PER_TOKEN - fixed) // len(headings))


def _escape(text: str) -> str:
    # Only the regex metacharacters: xgrammar's converter (and ECMAScript-style engines) warn on "\ " and "\&".
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def skeleton_regex(analysis_prompt: str = "paper", max_section_chars: int = 1024) -> str:
    """The regular expression of a guided analysis: the prompt's heading lines in order, each followed by a line
    break and a body of 1 to `max_section_chars` characters that starts with a non-space; bodies and the next
    heading are separated by a line break. Written in the subset that xgrammar, llguidance and Python agree on."""
    if max_section_chars < 1:
        raise ValueError("max_section_chars must be >= 1")
    body = r"[^ \t\r\n][\s\S]{0,%d}" % (max_section_chars - 1)
    return r"\n".join(_escape(heading) + r"\n" + body for heading in skeleton(analysis_prompt))


def xgrammar_available() -> bool:
    """Whether xgrammar (the `guidance` extra) is installed."""
    return importlib.util.find_spec("xgrammar") is not None


def _xgrammar():
    try:
        import xgrammar
    except ImportError as error:  # pragma: no cover - guarded by the config check
        raise ImportError(f"analysis_guidance: sections on the transformers path needs xgrammar: {INSTALL_HINT}") \
            from error
    return xgrammar


def compile_regex(regex: str, tokenizer, *, vocab_size: int | None = None, stop_token_ids=None):
    """`regex` compiled by xgrammar for `tokenizer` (an `xgrammar.CompiledGrammar`). `vocab_size`: the model's
    output size (may exceed the tokenizer's); `stop_token_ids`: the tokens that may end the text once the grammar is
    complete (the trainer's end tokens; default the tokenizer's end-of-sequence token)."""
    xgr = _xgrammar()
    info = xgr.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids) if stop_token_ids else None)
    return xgr.GrammarCompiler(info, max_threads=2).compile_regex(regex)


@dataclass
class SectionGuidance:
    """The skeleton constraint of one analysis setting: its regex (for vLLM) and, built once per tokenizer, the
    xgrammar grammar behind the transformers logits processor."""

    analysis_prompt: str
    max_section_chars: int
    regex: str = ""
    _compiled: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.regex = self.regex or skeleton_regex(self.analysis_prompt, self.max_section_chars)

    @classmethod
    def for_budget(cls, analysis_prompt: str, max_new_tokens: int) -> SectionGuidance:
        return cls(analysis_prompt, section_chars(max_new_tokens, analysis_prompt))

    def compiled(self, tokenizer, *, vocab_size: int | None = None, stop_token_ids=None):
        key = (id(tokenizer), vocab_size, tuple(stop_token_ids or ()))
        if key not in self._compiled:
            self._compiled[key] = compile_regex(self.regex, tokenizer, vocab_size=vocab_size,
                                                stop_token_ids=stop_token_ids)
        return self._compiled[key]

    def logits_processor(self, tokenizer, *, vocab_size: int | None = None, stop_token_ids=None):
        """A fresh `xgrammar.contrib.hf.LogitsProcessor` (it holds per-sequence state: one per `generate` call)."""
        _xgrammar()
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self.compiled(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids))

"""`SamplingParams` and `StructuredOutputsParams` taking exactly the keywords of vLLM 0.31.0's (`_api.API`)."""

import math
from dataclasses import dataclass, fields
from enum import Enum

from vllm._api import API, public, refuse_unimplemented


class RequestOutputKind(Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class StructuredOutputsParams:
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    def __post_init__(self):
        constraints = sum(getattr(self, name) is not None
                          for name in ("json", "regex", "choice", "grammar", "json_object", "structural_tag"))
        if constraints != 1:
            raise ValueError("You can only use one kind of structured outputs constraint" if constraints
                             else "You must use one kind of structured outputs constraint but none are specified")


assert [f.name for f in fields(StructuredOutputsParams)] == public(API["StructuredOutputsParams"]), \
    "StructuredOutputsParams no longer matches api.json"

_DEFAULTS = {name: value for name, value in API["SamplingParams"].items() if not name.startswith("_")}
_DEFAULTS["output_kind"] = RequestOutputKind.CUMULATIVE
# What the stand-in does as vLLM does; `output_kind`, `skip_clone`, `stream_interval` and
# `spaces_between_special_tokens` change how results are delivered, never which tokens are generated.
IMPLEMENTED = {
    "n", "temperature", "top_p", "top_k", "min_p", "seed", "stop_token_ids", "ignore_eos", "max_tokens", "logprobs",
    "repetition_penalty", "detokenize", "skip_special_tokens", "structured_outputs",
    "output_kind", "skip_clone", "stream_interval", "spaces_between_special_tokens",
}


class SamplingParams:
    """vLLM 0.31.0's sampling parameters. An unknown keyword is refused as vLLM's msgspec struct refuses it; a
    known one that the stand-in does not implement may only be given at vLLM's default."""

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(_DEFAULTS))
        if unknown:  # msgspec's own message
            raise TypeError(f"Unexpected keyword argument {unknown[0]!r}")
        refuse_unimplemented("SamplingParams", kwargs, _DEFAULTS, IMPLEMENTED)
        for name, default in _DEFAULTS.items():
            setattr(self, name, kwargs.get(name, default))
        if self.seed == -1:
            self.seed = None
        self.stop_token_ids = list(dict.fromkeys(self.stop_token_ids or []))
        if isinstance(self.structured_outputs, dict):
            raise TypeError("structured_outputs must be a StructuredOutputsParams")
        self._verify()

    def _verify(self) -> None:
        checks = [
            (self.n >= 1, f"n must be at least 1, got {self.n}."),
            (math.isfinite(self.temperature) and 0.0 <= self.temperature <= 2.0,
             f"temperature must be in [0, 2], got {self.temperature}."),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}."),
            (isinstance(self.top_k, int) and self.top_k >= -1,
             f"top_k must be 0 (disable), or at least 1, got {self.top_k}."),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}."),
            (self.max_tokens is None or self.max_tokens >= 1, f"max_tokens must be at least 1, got {self.max_tokens}."),
            (self.repetition_penalty > 0.0, f"repetition_penalty must be greater than zero, got "
                                            f"{self.repetition_penalty}."),
            (self.logprobs is None or self.logprobs >= 0, f"logprobs must be non-negative, got {self.logprobs}."),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def summary(self) -> dict:
        """What a test checks of the parameters of a call."""
        regex = self.structured_outputs.regex if self.structured_outputs is not None else None
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "min_p": self.min_p, "max_tokens": self.max_tokens, "seed": self.seed,
                "stop_token_ids": self.stop_token_ids, "logprobs": self.logprobs, "regex": regex}

    def __repr__(self) -> str:
        return f"SamplingParams({self.summary()})"

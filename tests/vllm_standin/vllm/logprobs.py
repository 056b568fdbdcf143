from dataclasses import dataclass


@dataclass
class Logprob:
    """vLLM's `Logprob`: the log-probability of a token, its rank in the vocabulary (1 = most likely) and its text."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None

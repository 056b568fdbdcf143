"""A client of an external analyst: a model served behind an OpenAI-compatible chat-completions API (vLLM's
`vllm serve`, SGLang, llama.cpp's server, `transformers serve`, hosted services), through the `openai` package
(the `analyst` extra).

- `check_endpoint`: the server answers `GET /models` and lists the model (before any weights load).
- `request_analyses`: one chat completion per prompt, at most `concurrency` at a time, each attempt cut at `timeout`
  seconds of wall clock, a failed attempt retried `retries` times after `backoff`, 2 x `backoff`, ... seconds. A
  request that still fails comes back as a reply with its `error` set; nothing here raises on a request.

The API key is read from the environment variable `api_key_env` when a client is made, and kept nowhere else.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

INSTALL_HINT = "pip install 'melrl[analyst]' (the openai client)"
_RETRIED_STATUS = (408, 409, 429)  # and every 5xx: what a retry can cure
_NO_KEY = "EMPTY"  # servers started without --api-key accept any key, and the client needs one


class AnalystEndpointError(ValueError):
    """The analyst endpoint cannot serve: unreachable, refusing, or not serving the model."""


@dataclass(frozen=True)
class EndpointSettings:
    base_url: str
    model: str
    api_key_env: str
    max_new_tokens: int
    temperature: float
    concurrency: int
    timeout: float
    retries: int
    backoff: float

    @classmethod
    def from_config(cls, config) -> EndpointSettings:
        """The settings of a `MELConfig` with `analyst: endpoint`."""
        return cls(
            base_url=config.analyst_base_url, model=config.analyst_model, api_key_env=config.analyst_api_key_env,
            max_new_tokens=config.analyst_max_new_tokens or config.analysis_max_new_tokens,
            temperature=config.temperature if config.analyst_temperature is None else config.analyst_temperature,
            concurrency=config.analyst_concurrency, timeout=config.analyst_timeout, retries=config.analyst_retries,
            backoff=config.analyst_backoff,
        )

    def client_options(self) -> dict:
        return {"base_url": self.base_url, "api_key": os.environ.get(self.api_key_env) or _NO_KEY,
                "timeout": self.timeout, "max_retries": 0}


@dataclass
class AnalystReply:
    """What the analyst answered to one prompt. `error` is set (and `text` empty) when every attempt failed."""

    text: str = ""
    finish_reason: str | None = None
    model: str | None = None
    latency_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 0
    error: str | None = None

    def record(self) -> dict:
        """Who wrote an analysis, for its line in `experiences.jsonl`."""
        return {"kind": "endpoint", "model": self.model, "latency_s": round(self.latency_s, 3),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "finish_reason": self.finish_reason, "attempts": self.attempts}


def _openai():
    try:
        import openai
    except ImportError as error:
        raise AnalystEndpointError(f"analyst: endpoint needs the openai client: {INSTALL_HINT}") from error
    return openai


def check_endpoint(settings: EndpointSettings) -> None:
    """Raise `AnalystEndpointError` (one line) unless the server at `base_url` serves `model`: listed by its
    `GET /models`, or, where the list leaves it out (`transformers serve` lists only the hub cache's models, not a
    local folder it serves), answering a 1-token chat completion for it."""
    openai = _openai()
    unreachable = f"analyst_base_url {settings.base_url} cannot be reached"
    with openai.OpenAI(**settings.client_options()) as client:
        try:
            served = [model.id for model in client.with_options(timeout=min(settings.timeout, 30.0)).models.list()]
            listing = "GET /models lists: " + (", ".join(served[:8]) + (" ..." if len(served) > 8 else "") or "none")
        except openai.APIStatusError as error:
            served, listing = [], f"GET /models answered HTTP {error.status_code}"
        except openai.OpenAIError as error:
            raise AnalystEndpointError(f"{unreachable} ({_describe(error, settings.timeout)}); start the server or "
                                       "correct the URL (it usually ends in /v1)") from error
        if settings.model in served:
            return
        try:
            client.chat.completions.create(model=settings.model, messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=1)
        except openai.APIStatusError as error:
            raise AnalystEndpointError(f"analyst_model {settings.model!r} is not served by {settings.base_url} "
                                       f"({listing}; a request for it answered HTTP {error.status_code})") from error
        except openai.OpenAIError as error:
            raise AnalystEndpointError(f"{unreachable} ({_describe(error, settings.timeout)})") from error


def request_analyses(settings: EndpointSettings, prompts: list[str]) -> list[AnalystReply]:
    """One reply per prompt (each sent as one user message), in order."""
    coroutine = _request_all(settings, prompts)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1) as pool:  # called where an event loop already runs (a notebook)
        return pool.submit(asyncio.run, coroutine).result()


async def _request_all(settings: EndpointSettings, prompts: list[str]) -> list[AnalystReply]:
    openai = _openai()
    semaphore = asyncio.Semaphore(settings.concurrency)
    async with openai.AsyncOpenAI(**settings.client_options()) as client:
        return list(await asyncio.gather(*(_request(client, semaphore, settings, p) for p in prompts)))


async def _request(client, semaphore: asyncio.Semaphore, settings: EndpointSettings, prompt: str) -> AnalystReply:
    reply = AnalystReply()
    async with semaphore:
        for attempt in range(settings.retries + 1):
            if attempt:
                await asyncio.sleep(settings.backoff * 2 ** (attempt - 1))
            reply.attempts = attempt + 1
            start = time.perf_counter()
            try:
                response = await asyncio.wait_for(client.chat.completions.create(
                    model=settings.model, messages=[{"role": "user", "content": prompt}],
                    max_tokens=settings.max_new_tokens, temperature=settings.temperature), settings.timeout)
                choice = response.choices[0]
            except Exception as error:  # noqa: BLE001 - a reply of any shape must not stop training
                reply.error = _describe(error, settings.timeout)
                if not _retryable(error):
                    break
                continue
            reply.latency_s = time.perf_counter() - start
            reply.text, reply.finish_reason = choice.message.content or "", choice.finish_reason
            reply.model = response.model or settings.model
            if response.usage is not None:
                reply.prompt_tokens, reply.completion_tokens = (response.usage.prompt_tokens,
                                                                response.usage.completion_tokens)
            reply.error = None
            return reply
    return reply


def _retryable(error: Exception) -> bool:
    openai = _openai()
    if isinstance(error, openai.APIStatusError):
        return error.status_code in _RETRIED_STATUS or error.status_code >= 500
    return isinstance(error, (TimeoutError, asyncio.TimeoutError, openai.APIConnectionError))


def _describe(error: Exception, timeout: float) -> str:
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return f"no reply within analyst_timeout = {timeout:g} s"
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]

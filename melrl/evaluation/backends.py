"""Generation back ends for evaluation: transformers `generate` (any device) and vLLM (GPU), one output shape.

A back end turns `Request`s (prompt, temperature, seed, token budget) into `Completion`s (text, generated tokens,
finish reason), one per request, in order. Temperature 0 means greedy decoding. Sampling is pure temperature
sampling (no top-p / top-k). A back end's `per_sample_seeds` says whether the evaluation should give every sample
its own seed: transformers draws each row from its own generator at no cost, so a sample's random numbers do not
depend on its batch; vLLM's V1 model runner samples a batch with seeded requests one request at a time, so its
samples come unseeded from the engine's generator (seeded once), `n` to a prompt.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from melrl.models import end_of_turn_ids, stop_token_ids


TRANSFORMERS_BATCH_SIZE = 32  # sequences per generate call
VLLM_BATCH_SIZE = 2048  # sequences handed to vLLM at once; it schedules them itself


@dataclass(frozen=True)
class Request:
    prompt: str
    temperature: float  # 0: greedy
    seed: int | None
    max_new_tokens: int


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # generated tokens, the end-of-sequence token included
    finish: str  # "stop" (end of sequence) or "length" (budget exhausted)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_backend(backend: str, *, model_is_loaded: bool) -> str:
    """"auto" → vLLM when it is installed, a GPU is present and the model is given by name; else transformers."""
    if backend not in ("auto", "transformers", "vllm"):
        raise ValueError(f"backend must be 'auto', 'transformers' or 'vllm', got {backend!r}")
    if backend == "vllm":
        if not vllm_available():
            raise ImportError("backend 'vllm' needs the vllm package: pip install -e '.[vllm]' (GPU machines)")
        if model_is_loaded:
            raise ValueError("backend 'vllm' loads the model itself: pass the model's name or folder, not a model")
        return "vllm"
    if backend == "auto" and not model_is_loaded and vllm_available() and torch.cuda.is_available():
        return "vllm"
    return "transformers"


class RowSampler(LogitsProcessor):
    """Chooses each row's next token itself and returns scores that make `generate`'s greedy step pick it.

    Rows at temperature 0 take the argmax; the others draw from softmax(logits / T) by inverting the CDF with one
    uniform number from their own `random.Random(seed)` per step, so a row's tokens depend only on its seed.
    """

    def __init__(self, temperatures: Sequence[float], seeds: Sequence[int | None]):
        self.temperatures = torch.tensor([float(t) for t in temperatures])  # (B,)
        self.sampled = [i for i, t in enumerate(temperatures) if t > 0]
        self.rngs = {i: random.Random(seeds[i]) for i in self.sampled}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        choice = scores.argmax(dim=-1)  # (B,)
        if self.sampled:
            rows = torch.tensor(self.sampled, device=scores.device)
            temps = self.temperatures[self.sampled].to(scores.device)  # (S,)
            cdf = torch.softmax(scores[rows].float() / temps[:, None], dim=-1).cumsum(dim=-1)  # (S, V)
            uniform = torch.tensor([self.rngs[i].random() for i in self.sampled], device=scores.device)  # (S,)
            # right=True never lands on a zero-probability token (its CDF equals its predecessor's).
            picked = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None], right=True).squeeze(1)  # (S,)
            choice[rows] = picked.clamp(max=scores.size(-1) - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, choice[:, None], 0.0)


class TransformersBackend:
    """Batched `model.generate` with left padding on whatever device the model is on."""

    name = "transformers"
    per_sample_seeds = True

    def __init__(self, model, tokenizer, batch_size: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size or TRANSFORMERS_BATCH_SIZE
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(model, tokenizer)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(requests), self.batch_size):
            out += self._generate_batch(requests[start : start + self.batch_size])
        return out

    def _generate_batch(self, requests: Sequence[Request]) -> list[Completion]:
        input_ids, mask = self._left_padded(self.tokenizer([r.prompt for r in requests])["input_ids"])  # (B, P)
        width = input_ids.size(1)
        config = GenerationConfig(
            max_new_tokens=max(r.max_new_tokens for r in requests), do_sample=False, use_cache=True,
            eos_token_id=sorted(self.eos_ids), pad_token_id=self.pad_id,
        )
        sampler = RowSampler([r.temperature for r in requests], [r.seed for r in requests])
        # not inference_mode: in training, tensors cached here may later need autograd
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=mask, generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
            )
        generated = output[:, width:].tolist()  # (B, <= budget)
        return [self._completion(tokens[: r.max_new_tokens]) for tokens, r in zip(generated, requests)]

    def _left_padded(self, token_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in token_ids)
        device = self.model.device
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in token_ids], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in token_ids], device=device)
        return input_ids, mask

    def _completion(self, tokens: list[int]) -> Completion:
        end = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        kept = tokens if end is None else tokens[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text, len(tokens) if end is None else end + 1, "length" if end is None else "stop")


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set(stop_token_ids(model, tokenizer))
    if not ids:
        raise ValueError("neither the model's generation config nor the tokenizer names an end-of-sequence token")
    return ids


class VLLMBackend:
    """vLLM's offline engine, seeded once; the unseeded samples of a prompt go as one request with `n` samples.

    A request with a seed of its own gets a sampling-parameter object of its own: vLLM 0.31 honours it with a
    per-request generator, which its V1 model runner's sampler serves one request at a time (a loop it calls
    slow; the V2 runner draws them together), so the evaluation sends none (`per_sample_seeds` False). Unseeded
    requests draw from the engine's generator, seeded with `seed`: the same requests in the same order give the
    same samples where the engine's scheduling and kernels repeat themselves. vLLM copies the parameters of each
    request, so one object can serve many prompts.
    """

    name = "vllm"
    per_sample_seeds = False

    def __init__(self, model_path: str, *, seed: int = 0, batch_size: int | None = None, dtype: str = "auto"):
        from vllm import LLM

        self.llm = LLM(model=model_path, seed=seed, dtype=dtype)
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_token_ids = [self.tokenizer.eos_token_id, *end_of_turn_ids(self.tokenizer)]
        self.batch_size = batch_size or VLLM_BATCH_SIZE

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        from vllm import SamplingParams

        shared: dict[tuple, SamplingParams] = {}  # one object per distinct setting, handed for every prompt using it
        prompts, params = [], []
        for group in sample_groups(requests):
            r = group[0]
            key = (r.temperature, len(group), r.max_new_tokens, r.seed)
            if key not in shared:
                shared[key] = SamplingParams(n=len(group), temperature=r.temperature, seed=r.seed,
                                             max_tokens=r.max_new_tokens, stop_token_ids=self.stop_token_ids)
            prompts.append(r.prompt)
            params.append(shared[key])
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        completions = [
            Completion(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop")
            for o in outputs for c in o.outputs
        ]
        if len(completions) != len(requests):
            raise RuntimeError(f"vLLM returned {len(completions)} completions for {len(requests)} requests")
        return completions


def sample_groups(requests: Sequence[Request]) -> list[list[Request]]:
    """Runs of consecutive requests that vLLM can serve as one prompt with `n` samples: unseeded sampled requests
    with the same prompt and budget. Greedy and seeded requests stay alone."""
    groups: list[list[Request]] = []
    for r in requests:
        last = groups[-1][0] if groups else None
        same = last is not None and (r.prompt, r.temperature, r.max_new_tokens) == (
            last.prompt, last.temperature, last.max_new_tokens)
        if same and r.seed is None and last.seed is None and r.temperature > 0:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups

"""The engine behind the stand-in's `LLM` and its server: a transformers model on the CPU that generates token by
token from the weights loaded into it, as vLLM's sampler does for the settings `SamplingParams` implements.

- Stops at the tokenizer's end-of-sequence token and the model's generation-config end tokens (unless
  `ignore_eos`), at `stop_token_ids`, at `max_tokens` and at `max_model_len`; the stop token is part of
  `token_ids`, as in vLLM.
- `structured_outputs=StructuredOutputsParams(regex=...)`: xgrammar's regex grammar (vLLM's default backend) masks
  every step; the grammar may end only with an end token.
- `logprobs`: the sampled token's log-probability (and the N best), raw or after temperature, top-k, top-p and
  min-p (`logprobs_mode="processed_logprobs"`, as TRL asks).
- Sleep mode: `sleep(level=2)` discards the weights (they become NaN) and the KV cache; generating while any part
  sleeps, or before every discarded tensor was loaded again, is an error; `load_weights` while the weights sleep
  is an error (TRL wakes them first).
- Counts what it is asked to do (`stats`) and writes it to the event log (`vllm._events`), with a checksum of the
  weights each generate call used.
"""

from __future__ import annotations

from collections import Counter

import torch

from vllm._events import record
from vllm.logprobs import Logprob
from vllm.outputs import CompletionOutput

SLEEP_TAGS = ("weights", "kv_cache", "scheduling")


class Engine:
    def __init__(self, model: str, *, tokenizer: str | None = None, seed: int = 0, dtype="auto",
                 max_model_len: int | None = None, enable_sleep_mode: bool = False,
                 logprobs_mode: str = "raw_logprobs", trust_remote_code: bool = False):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if logprobs_mode not in ("raw_logprobs", "processed_logprobs"):
            raise NotImplementedError(f"logprobs_mode={logprobs_mode!r}")
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype,
                                                          trust_remote_code=trust_remote_code).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model, trust_remote_code=trust_remote_code)
        self.max_model_len = max_model_len or self.model.config.max_position_embeddings
        self.generator = torch.Generator().manual_seed(seed)
        self.enable_sleep_mode = enable_sleep_mode
        self.logprobs_mode = logprobs_mode
        self.eos_token_id = self.tokenizer.eos_token_id
        configured = self.model.generation_config.eos_token_id
        configured = configured if isinstance(configured, (list, tuple)) else [configured]
        self.config_eos_ids = {token for token in configured if token is not None} - {self.eos_token_id}
        self.parameters = dict(self.model.named_parameters())
        self.asleep: set[str] = set()
        self.discarded: set[str] = set()  # tensors whose values sleep(level=2) threw away
        self.stats: Counter = Counter()
        self._grammars: dict[str, object] = {}
        record("init", model=model, parameters=len(self.parameters), max_model_len=self.max_model_len,
               enable_sleep_mode=enable_sleep_mode, logprobs_mode=logprobs_mode, seed=seed)

    # ------------------------------------------------------------------ weights and sleep mode

    def load_weights(self, weights) -> set[str]:
        if "weights" in self.asleep:
            raise RuntimeError("load_weights while the weights sleep: wake_up(tags=['weights']) first")
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                if name not in self.parameters:
                    raise KeyError(f"{name!r} is not a parameter of the served model")
                param = self.parameters[name]
                if tuple(tensor.shape) != tuple(param.shape):
                    raise ValueError(f"{name}: shape {tuple(tensor.shape)} does not match {tuple(param.shape)}")
                param.copy_(tensor.detach().to(device=param.device, dtype=param.dtype))
                loaded.add(name)
        self.discarded -= loaded
        self.stats["load_weights_calls"] += 1
        self.stats["tensors_loaded"] += len(loaded)
        record("load_weights", names=sorted(loaded))
        return loaded

    def sleep(self, level: int) -> None:
        if not self.enable_sleep_mode:
            raise RuntimeError("Sleep mode is not enabled in the model config")
        if level not in (0, 1, 2):
            raise ValueError(f"sleep level must be 0, 1 or 2, got {level}")
        self.asleep |= {"scheduling"} if level == 0 else {"weights", "kv_cache"}
        if level == 2:
            with torch.no_grad():
                for param in self.parameters.values():
                    param.fill_(float("nan"))
            self.discarded = set(self.parameters)
        self.stats[f"sleep_level_{level}"] += 1
        record("sleep", level=level)

    def wake_up(self, tags: list[str] | None) -> None:
        tags = list(SLEEP_TAGS) if tags is None else list(tags)
        if not set(tags) <= set(SLEEP_TAGS):
            raise ValueError(f"wake_up tags must be in {SLEEP_TAGS}, got {tags}")
        self.asleep -= set(tags)
        for tag in tags:
            self.stats[f"wake_up_{tag}"] += 1
        record("wake_up", tags=tags)

    def reset_prefix_cache(self) -> bool:
        self.stats["reset_prefix_cache"] += 1
        record("reset_prefix_cache")
        return True

    def checksum(self) -> float:
        return float(sum(param.detach().double().sum() for param in self.parameters.values()))

    # ------------------------------------------------------------------ generation

    def check_ready(self) -> None:
        if self.asleep:
            raise RuntimeError(f"generate while the engine sleeps ({sorted(self.asleep)}): wake_up first")
        if self.discarded:
            raise RuntimeError(f"generate after sleep(level=2) discarded the weights: {len(self.discarded)} of "
                               f"{len(self.parameters)} tensors were not loaded again")

    def generate(self, prompts: list[list[int]], params: list, source: str) -> list[list[CompletionOutput]]:
        """The completions of each prompt (`params[i].n` of them), one event for the call."""
        self.check_ready()
        for ids in prompts:
            if not ids:
                raise ValueError("The decoder prompt cannot be empty")
            if len(ids) >= self.max_model_len:
                raise ValueError(f"The decoder prompt (length {len(ids)}) is longer than the maximum model length "
                                 f"of {self.max_model_len}. Make sure that `max_model_len` is no smaller than the "
                                 "number of text tokens.")
        results = []
        for ids, p in zip(prompts, params, strict=True):
            generator = torch.Generator().manual_seed(p.seed) if p.seed is not None else self.generator
            results.append([self._sample(ids, p, generator, index) for index in range(p.n)])
        self.stats["generate_calls"] += 1
        self.stats["requests"] += len(prompts)
        summaries = []
        for p in params:
            if p.summary() not in summaries:
                summaries.append(p.summary())
        record("generate", source=source, requests=len(prompts), prompt_lengths=[len(ids) for ids in prompts],
               params=summaries, weights_checksum=self.checksum(),
               completions=[c.token_ids for outs in results for c in outs],
               finish_reasons=[c.finish_reason for outs in results for c in outs])
        return results

    def _sample(self, prompt_ids: list[int], params, generator: torch.Generator, index: int) -> CompletionOutput:
        matcher, bitmask = self._grammar_matcher(params.structured_outputs)
        stops = set(params.stop_token_ids) | (set() if params.ignore_eos else self.config_eos_ids)
        budget = params.max_tokens or self.max_model_len - len(prompt_ids)
        tokens: list[int] = []
        logprobs: list[dict[int, Logprob]] = []
        cumulative = 0.0
        finish, stop_reason = "length", None
        input_ids, past = torch.tensor([prompt_ids]), None
        with torch.no_grad():
            while True:
                out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True, logits_to_keep=1)
                past = out.past_key_values
                logits = out.logits[0, -1].float()  # (V,)
                if matcher is not None:
                    import xgrammar

                    matcher.fill_next_token_bitmask(bitmask)
                    xgrammar.apply_token_bitmask_inplace(logits.unsqueeze(0), bitmask)
                raw = torch.log_softmax(logits, dim=-1)
                processed = self._processed_logits(logits, params, prompt_ids + tokens)
                if params.temperature < 1e-5:
                    token = int(processed.argmax())
                else:
                    token = _draw(torch.softmax(processed, dim=-1), generator)
                if matcher is not None and not matcher.accept_token(token):
                    raise RuntimeError(f"the grammar refused token {token} that its own mask allowed")
                chosen = raw if self.logprobs_mode == "raw_logprobs" else torch.log_softmax(processed, dim=-1)
                cumulative += float(chosen[token])
                if params.logprobs is not None:
                    logprobs.append(self._position_logprobs(chosen, token, params.logprobs))
                tokens.append(token)
                if token == self.eos_token_id and not params.ignore_eos:
                    finish = "stop"
                    break
                if token in stops:
                    finish, stop_reason = "stop", token
                    break
                if len(tokens) >= budget or len(prompt_ids) + len(tokens) >= self.max_model_len:
                    break
                input_ids = torch.tensor([[token]])
        text = self.tokenizer.decode(tokens, skip_special_tokens=params.skip_special_tokens) if params.detokenize \
            else ""
        return CompletionOutput(index=index, text=text, token_ids=tokens,
                                cumulative_logprob=cumulative if params.logprobs is not None else None,
                                logprobs=logprobs if params.logprobs is not None else None,
                                finish_reason=finish, stop_reason=stop_reason)

    @staticmethod
    def _processed_logits(logits: torch.Tensor, params, seen: list[int]) -> torch.Tensor:
        """(V,) logits after the repetition penalty, temperature, min-p, top-k and top-p (masked to -inf)."""
        if params.repetition_penalty != 1.0 and seen:
            logits = logits.clone()
            ids = torch.tensor(sorted(set(seen)))
            values = logits[ids]
            logits[ids] = torch.where(values > 0, values / params.repetition_penalty,
                                      values * params.repetition_penalty)
        if params.temperature < 1e-5:
            return logits
        logits = logits / params.temperature  # a new tensor: the masks below leave the raw logits alone
        probs = torch.softmax(logits, dim=-1)
        if params.min_p > 0:
            logits[probs < params.min_p * probs.max()] = float("-inf")
        if params.top_k > 0:
            kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
            logits[logits < kth] = float("-inf")
        if params.top_p < 1.0:
            order = torch.argsort(logits, descending=True)
            sorted_probs = torch.softmax(logits[order], dim=-1)
            drop = sorted_probs.cumsum(dim=-1) - sorted_probs > params.top_p  # keep the token that crosses
            logits[order[drop]] = float("-inf")
        return logits

    def _position_logprobs(self, logprobs: torch.Tensor, token: int, top: int) -> dict[int, Logprob]:
        """The sampled token and the `top` most likely ones, each with its rank (1 = most likely)."""
        ids = [token] + [int(i) for i in torch.topk(logprobs, top).indices] if top else [token]
        return {i: Logprob(float(logprobs[i]), int((logprobs > logprobs[i]).sum()) + 1,
                           self.tokenizer.decode([i])) for i in ids}

    def _grammar_matcher(self, structured):
        if structured is None:
            return None, None
        if structured.regex is None:
            raise NotImplementedError("the CPU stand-in implements structured outputs for `regex` only")
        import xgrammar

        if structured.regex not in self._grammars:
            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.model.config.vocab_size,
                stop_token_ids=sorted({self.eos_token_id} | self.config_eos_ids))
            self._grammars[structured.regex] = xgrammar.GrammarCompiler(info, max_threads=1).compile_regex(
                structured.regex)
        matcher = xgrammar.GrammarMatcher(self._grammars[structured.regex])
        return matcher, xgrammar.allocate_token_bitmask(1, self.model.config.vocab_size)


def _draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token from (V,) probabilities, by inverting their CDF with one uniform number from `generator`."""
    cdf = probs.cumsum(dim=-1)
    uniform = torch.rand(1, generator=generator) * cdf[-1]
    return int(torch.searchsorted(cdf, uniform, right=True).clamp(max=probs.numel() - 1))

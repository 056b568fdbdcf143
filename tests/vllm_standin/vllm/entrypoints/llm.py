"""`LLM`, vLLM's offline engine, on the stand-in's `Engine`; the weight-loading path TRL uses is
`llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(...)`."""

from __future__ import annotations

from types import SimpleNamespace

from vllm._api import API, refuse_unknown
from vllm._engine import Engine
from vllm.outputs import RequestOutput
from vllm.sampling_params import SamplingParams

# Keywords the stand-in honours, and those that change where and how fast vLLM runs but not what it generates
# (memory, scheduling, kernels, process layout); any other keyword vLLM takes is refused as not implemented.
_HONOURED = {"model", "tokenizer", "seed", "dtype", "max_model_len", "enable_sleep_mode", "logprobs_mode",
             "trust_remote_code"}
_NO_EFFECT_HERE = {"gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "model_impl",
                   "distributed_executor_backend", "enforce_eager", "disable_log_stats", "tensor_parallel_size",
                   "quantization"}


class _Model:
    """What TRL reaches as `model_runner.model`: vLLM's model module, here only its `load_weights`."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def load_weights(self, weights) -> set[str]:
        return self._engine.load_weights(weights)


class LLM:
    def __init__(self, model: str, **kwargs):
        refuse_unknown("LLM", kwargs, API["LLM.__init__"] + API["EngineArgs"])
        unsupported = set(kwargs) - _HONOURED - _NO_EFFECT_HERE
        if unsupported:
            raise NotImplementedError(f"LLM: the CPU stand-in does not implement {sorted(unsupported)}")
        if kwargs.get("tensor_parallel_size", 1) != 1 or kwargs.get("quantization") is not None:
            raise NotImplementedError("LLM: the CPU stand-in runs one unquantized copy of the model")
        self.engine = Engine(model, **{k: v for k, v in kwargs.items() if k in _HONOURED})
        runner = SimpleNamespace(model=_Model(self.engine))
        self.llm_engine = SimpleNamespace(
            model_config=SimpleNamespace(max_model_len=self.engine.max_model_len),
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)),
        )
        self._next_request = 0

    @property
    def stats(self):
        return self.engine.stats

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None, mm_processor_kwargs=None) -> list[RequestOutput]:
        if lora_request is not None or priority is not None or mm_processor_kwargs is not None:
            raise NotImplementedError("LLM.generate: lora_request, priority and mm_processor_kwargs")
        prompts = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        params = sampling_params if sampling_params is not None else SamplingParams()
        params = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        texts, token_ids = [], []
        for prompt in prompts:
            if isinstance(prompt, str):
                texts.append(prompt)
                token_ids.append(self.engine.tokenizer(prompt, **(tokenization_kwargs or {}))["input_ids"])
            elif set(prompt) == {"prompt_token_ids"}:
                texts.append(None)
                token_ids.append(list(prompt["prompt_token_ids"]))
            else:
                raise NotImplementedError(f"LLM.generate: prompts with {sorted(prompt)}")
        results = self.engine.generate(token_ids, params, source="LLM.generate")
        outputs = []
        for text, ids, completions in zip(texts, token_ids, results):
            outputs.append(RequestOutput(str(self._next_request), text, ids, None, completions, True))
            self._next_request += 1
        return outputs

    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        self.engine.sleep(level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.engine.wake_up(tags)

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        return self.engine.reset_prefix_cache()

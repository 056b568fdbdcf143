"""A CPU stand-in for the slice of vLLM 0.31.0's API that TRL 1.16 (`trl/generation/vllm_generation.py`,
`vllm_client.py`) and melrl (`melrl/evaluation/backends.py`) use. For melrl's tests only: it tests their
integration code, not vLLM. Put on `PYTHONPATH` (with its `vllm-0.31.0.dist-info`, so that TRL's availability and
version checks pass as with an installed vLLM 0.31.0) by the tests that need it; see tests/vllm_run.py."""

__version__ = "0.31.0"

from vllm.entrypoints.llm import LLM  # noqa: E402
from vllm.outputs import CompletionOutput, RequestOutput  # noqa: E402
from vllm.sampling_params import SamplingParams, StructuredOutputsParams  # noqa: E402

__all__ = ["LLM", "CompletionOutput", "RequestOutput", "SamplingParams", "StructuredOutputsParams"]

"""`melrl.training.generation`: completions paired with their prompts on TRL's continuous batching, and a lost
request is an error."""

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from transformers import GenerationConfig

from melrl.training.generation import generate_by_request, generate_distributed
from tests.test_trainer import make_trainer


class OutOfOrderManager:
    """A stand-in continuous-batching manager: its "completion" of a prompt is the prompt reversed, delivered last
    request first; `fail` maps a request's position to the error its result carries."""

    def __init__(self, fail=None):
        self.fail, self.queue, self.submitted = fail or {}, [], []

    def add_request(self, input_ids, request_id=None, **kwargs):
        self.submitted.append(request_id)
        error = self.fail.get(len(self.submitted) - 1)
        self.queue.insert(0, SimpleNamespace(request_id=request_id, generated_tokens=list(reversed(input_ids)),
                                             error=error, is_finished=lambda: True))
        return request_id

    def get_result(self, request_id=None, timeout=None):
        return self.queue.pop(0) if self.queue else None

    def is_running(self):
        return bool(self.queue)


class StandInModel:
    def __init__(self, manager):
        self.manager, self.configs = manager, []

    @contextmanager
    def continuous_batching_context_manager(self, **kwargs):
        self.configs.append(kwargs)
        yield self.manager


def test_completions_are_paired_with_their_prompts_by_request_id():
    prompts = [[1, 2], [3, 4, 5], [6]]
    model = StandInModel(OutOfOrderManager())
    config = GenerationConfig(max_new_tokens=7)
    assert generate_by_request(model, prompts, config) == [[2, 1], [5, 4, 3], [6]]
    assert model.manager.submitted == ["melrl-0", "melrl-1", "melrl-2"]
    (kwargs,) = model.configs
    assert kwargs["generation_config"] is config
    assert (kwargs["workload_hints"].num_requests, kwargs["workload_hints"].max_prompt_length) == (3, 3)
    assert generate_by_request(model, [], config) == []


def test_a_failed_request_is_an_error_naming_it():
    model = StandInModel(OutOfOrderManager(fail={1: "out of blocks"}))
    with pytest.raises(RuntimeError, match=r"3 requests: failed: melrl-1 \(out of blocks\)"):
        generate_by_request(model, [[1], [2], [3]], GenerationConfig(max_new_tokens=4))


class LosingManager:
    """Wraps a real manager whose generation thread stops before it delivers the second request's result: what
    transformers' `generate_batch` leaves out of its results, logging it only."""

    def __init__(self, manager):
        self.manager, self.ids, self.delivered = manager, [], 0

    def add_request(self, *args, **kwargs):
        self.ids.append(self.manager.add_request(*args, **kwargs))
        return self.ids[-1]

    def add_requests(self, *args, **kwargs):
        ids = self.manager.add_requests(*args, **kwargs)
        self.ids += ids
        return ids

    def get_result(self, request_id=None, timeout=None):
        result = self.manager.get_result(timeout=timeout)
        if result is None or result.request_id == self.ids[1]:
            return None
        self.delivered += 1
        return result

    def is_running(self):
        return self.delivered < len(self.ids) - 1


def test_a_request_lost_by_continuous_batching_is_an_error_naming_it(tiny_model_dir, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_model_dir, tmp_path, use_transformers_continuous_batching=True,
                           transformers_continuous_batching_config={"num_blocks": 16, "max_batch_tokens": 256})
    model_class = type(trainer.model)
    original = model_class.continuous_batching_context_manager

    @contextmanager
    def losing(self, *args, **kwargs):
        with original(self, *args, **kwargs) as manager:
            yield LosingManager(manager)

    prompts = [[100 + i, 200 + i, 300 + i] for i in range(3)]
    completions = generate_distributed(trainer, prompts, 3)  # the real engine: a completion for every prompt
    assert len(completions) == 3 and all(0 < len(c) <= 3 for c in completions)
    monkeypatch.setattr(model_class, "continuous_batching_context_manager", losing)
    with pytest.raises(RuntimeError, match="3 requests: no result for melrl-1$"):
        generate_distributed(trainer, prompts, 3)

"""What `MELTrainer` relies on in TRL and transformers, pinned by behaviour.

`MELTrainer` overrides `_calculate_rewards`, `_generate_and_score_completions`, `_compute_loss` and `training_step`,
calls `_generate_single_turn`, `_tokenize_prompts` and `_get_per_token_logps_and_entropies`, reads `_step`,
`_buffered_inputs`' order and the output keys of a generation batch, sets the vLLM engine's budget and regex
for one call, and generates guided analyses and continuous-batching analyses itself inside the contexts TRL's
`_generate_single_turn` generates in. A TRL release that changes any of these fails here, by name, before a training
test does.
"""

import inspect
from types import SimpleNamespace

import pytest
import torch
import trl.trainer.grpo_trainer as trl_grpo
from accelerate import PartialState
from trl import GRPOTrainer
from trl.generation.vllm_generation import VLLMGeneration

import melrl.training.generation as melrl_generation
from melrl.method.guidance import SectionGuidance
from melrl.training.generation import generation_budget, structured_outputs
from melrl.training.trainer import MELTrainer
from tests.test_trainer import make_trainer

OVERRIDDEN = ["_calculate_rewards", "_generate_and_score_completions", "_compute_loss", "training_step"]
CALLED = ["_generate_single_turn", "_tokenize_prompts", "_get_per_token_logps_and_entropies"]


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_mel_overrides_take_what_trl_passes(name):
    # TRL calls these; an override must accept every parameter the parent takes, by the same names and kinds
    theirs, mine = (inspect.signature(getattr(cls, name)).parameters for cls in (GRPOTrainer, MELTrainer))
    assert [(p.name, p.kind) for p in mine.values()] == [(p.name, p.kind) for p in theirs.values()], name


def record_calls(trainer, monkeypatch, names):
    """Record every call of the named GRPOTrainer methods on `trainer` (then run them as they are)."""
    calls = []
    for name in names:
        original = getattr(trainer, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append((_name, args, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(trainer, name, spy)
    return calls


def test_mels_calls_bind_to_trls_signatures(tiny_model_dir, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_model_dir, tmp_path, algorithm="reinforce_pp", beta=0.1, max_pairs_per_prompt=1)
    trainer.model.train()
    calls = record_calls(trainer, monkeypatch, CALLED)
    rows = [dict(trainer.train_dataset[i // 4]) for i in range(8)]
    output = trainer._generate_and_score_completions(rows)  # rollouts (TRL), then analyses and replays (MEL)
    trainer._sampling_log_probs({k: v for k, v in output.items() if k != "old_per_token_logps"})
    assert {name for name, _, _ in calls} == set(CALLED)
    for name, args, kwargs in calls:
        inspect.signature(getattr(GRPOTrainer, name)).bind(trainer, *args, **kwargs)  # TypeError: TRL changed it


def vllm_server_stand_in(max_completion_length=64):
    """TRL's own `VLLMGeneration` in server mode, one process, with a client that records what it is asked."""
    engine = object.__new__(VLLMGeneration)  # its __init__ would connect to a server
    requests = []

    def generate(prompts, features=None, **sampling):
        requests.append(sampling)
        return {"prompt_ids": prompts, "completion_ids": [[7, 8]] * len(prompts) * sampling["n"],
                "logprobs": None}

    engine.__dict__.update(
        accelerator=SimpleNamespace(is_main_process=True, process_index=0, num_processes=1), mode="server",
        enable_sleep_mode=False, temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
        max_completion_length=max_completion_length, logprobs=0, structured_outputs_regex=None,
        generation_kwargs={}, vllm_client=SimpleNamespace(generate=generate))
    return engine, requests


def test_the_vllm_engine_receives_the_budget_and_regex_of_one_call():
    PartialState()  # accelerate's collectives (one process here) need a state
    engine, requests = vllm_server_stand_in(max_completion_length=64)
    trainer = SimpleNamespace(use_vllm=True, vllm_generation=engine, generation_config=None, generation_kwargs={})
    with generation_budget(trainer, 5), structured_outputs(trainer, "(a|b)+"):
        engine.generate([[1, 2, 3]], None, 1)
    engine.generate([[1, 2, 3]], None, 1)
    assert (requests[0]["max_tokens"], requests[0]["structured_outputs_regex"]) == (5, "(a|b)+")
    assert (requests[1]["max_tokens"], requests[1]["structured_outputs_regex"]) == (64, None)  # restored


def test_micro_steps_read_the_buffered_generation_batch_in_order(tiny_model_dir, tmp_path, monkeypatch):
    # The NLL of micro-step `_step % steps_per_generation` is trained beside TRL's slice of the same index: TRL must
    # hand `_compute_loss` its buffered slices in that order, count micro-steps in `_step` and generate once per
    # `steps_per_generation` micro-steps.
    trainer = make_trainer(tiny_model_dir, tmp_path, meta_experience=False, gradient_accumulation_steps=2,
                           steps_per_generation=2, per_device_train_batch_size=4, max_steps=2)
    seen, generated_at = [], []
    original_loss, original_generate = trainer._compute_loss, trainer._generate_and_score_completions

    def compute_loss(model, inputs):
        slot = trainer._step % trainer.args.steps_per_generation
        seen.append((trainer._step, inputs is trainer._buffered_inputs[slot], trainer.current_gradient_accumulation_steps))
        return original_loss(model, inputs)

    def generate(inputs):
        generated_at.append(trainer._step)
        return original_generate(inputs)

    monkeypatch.setattr(trainer, "_compute_loss", compute_loss)
    monkeypatch.setattr(trainer, "_generate_and_score_completions", generate)
    trainer.train()
    assert seen == [(0, True, 2), (1, True, 2), (2, True, 2), (3, True, 2)]
    assert generated_at == [0, 2]


def test_grpo_output_has_the_keys_mel_reads(tiny_model_dir, tmp_path):
    # steps_per_generation > gradient accumulation makes TRL keep the sampling policy's log-probabilities
    trainer = make_trainer(tiny_model_dir, tmp_path, meta_experience=False, beta=0.1, gradient_accumulation_steps=1,
                           steps_per_generation=2, per_device_train_batch_size=4)
    trainer.model.train()
    rows = [dict(trainer.train_dataset[i // 4]) for i in range(8)]  # 2 prompts x G = 4
    output = trainer._generate_and_score_completions(rows)
    mask = output["completion_mask"]
    assert output["advantages"].shape == (8,)
    for key in ("old_per_token_logps", "ref_per_token_logps", "completion_ids"):
        assert output[key].shape == mask.shape, key
    for key in ("prompt_ids", "prompt_mask"):
        assert output[key].size(0) == 8, key


def test_rewards_reach_the_loop_when_trl_copies_the_rows(tiny_model_dir, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_model_dir, tmp_path)
    trainer.model.train()
    handed = []
    monkeypatch.setattr(trainer, "_meta_experience_phase", lambda rollouts: handed.append(rollouts) or [])
    score = trainer._calculate_rewards
    monkeypatch.setattr(trainer, "_calculate_rewards",
                        lambda inputs, *args: score([dict(row) for row in inputs], *args))  # a TRL that copies
    rows = [dict(trainer.train_dataset[i // 4]) for i in range(8)]
    trainer._generate_and_score_completions(rows)
    (rollouts,) = handed
    for ids, reward in zip(rollouts.completion_ids, rollouts.rewards.tolist(), strict=True):
        text = trainer.processing_class.decode(ids, skip_special_tokens=True)
        assert reward == [float(len(text) % 2)]  # parity_accuracy of this very completion
    assert rollouts.problems == [row["problem"] for row in rows]


def test_continuous_batching_api_pairs_requests_by_id():
    # `generate_by_request` drives transformers' manager with its own request ids, in the contexts and configs of
    # TRL's `generate_batch` branch
    from transformers.generation.continuous_batching import ContinuousBatchingManager, ContinuousMixin
    from transformers.generation.continuous_batching.requests import GenerationOutput

    context = inspect.signature(ContinuousMixin.continuous_batching_context_manager).parameters
    assert {"generation_config", "block", "timeout", "continuous_batching_config", "workload_hints"} <= set(context)
    assert "request_id" in inspect.signature(ContinuousBatchingManager.add_request).parameters
    assert "timeout" in inspect.signature(ContinuousBatchingManager.get_result).parameters
    assert callable(ContinuousBatchingManager.is_running)
    output = GenerationOutput(request_id="r")
    assert output.generated_tokens == [] and output.error is None and not output.is_finished()


def test_grpo_loss_is_scaled_for_gradient_accumulation():
    # The NLL term and the RFT loss are scaled for the micro-steps themselves; the Trainer must not divide again.
    assert GRPOTrainer.loss_is_scaled_for_ga is True


def test_a_built_trainer_has_what_mel_reads(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path)
    for name in ("num_generations", "reward_func_names", "reward_weights", "eos_token_ids", "use_vllm",
                 "generation_config", "generation_kwargs", "temperature", "beta", "ref_model", "model_wrapped",
                 "pad_to_multiple_of", "_dist", "_tokenizer", "use_transformers_continuous_batching",
                 "continuous_batching_config"):
        assert hasattr(trainer, name), f"GRPOTrainer no longer sets {name}"
    assert isinstance(trainer._metrics["train"]["any"], list)  # a defaultdict(list) per mode
    ids = torch.tensor([[5, 6, 7, 8]])
    labels = torch.tensor([[-100, -100, 7, 8]])
    fused = trainer.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
    assert fused.log_probs.shape == (1, 3) and fused.log_probs[0, 0] == 0  # label -100 scores 0


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_grpo_loss_takes_per_token_advantages(tiny_model_dir, tmp_path, level):
    # reinforce_pp* hand TRL (B, T) advantages: TRL unsqueezes (B,) only, so row-constant (B, T) advantages give the
    # loss of their (B,) rows
    from tests.test_trainer import loss_inputs

    trainer = make_trainer(tiny_model_dir, tmp_path, importance_sampling_level=level, loss_type="grpo")
    inputs = loss_inputs(trainer)
    per_rollout = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    per_token = inputs["advantages"].unsqueeze(1) * inputs["completion_mask"]
    assert torch.equal(GRPOTrainer._compute_loss(trainer, trainer.model, {**inputs, "advantages": per_token}),
                       per_rollout)


def named(trainer, values):
    """`values` with the trainer's own objects replaced by their attribute names (readable failure messages)."""
    names = {id(getattr(trainer, name)): name for name in ("model_wrapped", "accelerator", "generation_kwargs")}
    return tuple(names.get(id(value), value) for value in values)


class RecordingBackend:
    """TRL's distributed backend (`trainer._dist`), every method call recorded."""

    def __init__(self, backend, seen, trainer):
        self._backend, self._seen, self._trainer = backend, seen, trainer

    def __getattr__(self, name):
        value = getattr(self._backend, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            self._seen.append((f"_dist.{name}", named(self._trainer, args), kwargs))
            return value(*args, **kwargs)

        return call


def record_generation_contexts(trainer, monkeypatch):
    """What a generate call on `trainer` runs in, in order: each `unwrap_model_for_generation` (TRL's and melrl's
    import alike) with its arguments, each call on TRL's distributed backend, and at the model's `generate` or
    continuous-batching manager: whether gradients are on, whether the model is in training mode, the model's
    dtype, and whether it got the trainer's generation and continuous-batching configs."""
    seen = []
    for module in (trl_grpo, melrl_generation):
        def unwrap(*args, _original=module.unwrap_model_for_generation, **kwargs):
            seen.append(("unwrap_model_for_generation", named(trainer, args),
                         dict(zip(kwargs, named(trainer, kwargs.values())))))
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "unwrap_model_for_generation", unwrap)
    monkeypatch.setattr(trainer, "_dist", RecordingBackend(trainer._dist, seen, trainer))
    model_class = type(trainer.model)
    for name in ("generate", "continuous_batching_context_manager"):
        def engine(model, *args, _name=name, _original=getattr(model_class, name), **kwargs):
            seen.append((_name, model is trainer.model, torch.is_grad_enabled(), model.training, model.dtype,
                         kwargs.get("generation_config") is trainer.generation_config,
                         kwargs.get("continuous_batching_config") is trainer.continuous_batching_config))
            return _original(model, *args, **kwargs)

        monkeypatch.setattr(model_class, name, engine)
    return seen


@pytest.mark.parametrize("engine", ["generate", "continuous_batching"])
def test_melrl_generates_in_the_contexts_trl_generates_in(tiny_model_dir, tmp_path, monkeypatch, engine):
    # Guided analyses (`generate` with xgrammar's logits processor) and continuous-batching analyses (by request id)
    # bypass `_generate_single_turn`; they must unwrap, gather ZeRO-3 parameters, summon FSDP's full parameters and
    # turn gradients off exactly as TRL's branch of the same engine does.
    continuous = engine == "continuous_batching"
    trainer = make_trainer(tiny_model_dir, tmp_path, use_transformers_continuous_batching=continuous,
                           transformers_continuous_batching_config={"num_blocks": 16, "max_batch_tokens": 256})
    trainer.model.train()
    seen = record_generation_contexts(trainer, monkeypatch)
    prompts = [[5, 6, 7, 8], [9, 10]]
    with generation_budget(trainer, 4):
        theirs = trainer._generate_single_turn(prompts, None, {}, 1)[0]
        trls_contexts, seen[:] = list(seen), []
        if continuous:
            mine = melrl_generation._continuous_batching_generate(trainer, prompts)
        else:
            mine = melrl_generation._guided_generate(trainer, prompts, SectionGuidance.for_budget("compact", 4))
    assert [entry[0] for entry in trls_contexts] == \
        ["unwrap_model_for_generation", "_dist.summon_full_params",
         "continuous_batching_context_manager" if continuous else "generate"]
    assert seen == trls_contexts
    assert trainer.model.training
    assert len(mine) == len(theirs) == 2 and all(0 < len(ids) <= 4 for ids in mine)

"""Every private TRL / transformers method and attribute `MELTrainer` relies on, in one place.

`MELTrainer` overrides or calls these; a TRL or transformers release that renames one, changes its signature or
stops setting an attribute fails here, by name, before any training test does.
"""

import inspect

import pytest
import torch
from transformers import Trainer, TrainerCallback
from trl import GRPOTrainer
from trl.generation.vllm_generation import VLLMGeneration

from melrl.training.trainer import MELTrainer

# name -> the parameters (after self) MELTrainer overrides it with or calls it with
METHODS = {
    "_calculate_rewards": ["inputs", "prompts", "completions", "completion_ids_list"],  # overridden
    "_generate_and_score_completions": ["inputs"],  # overridden
    "_compute_loss": ["model", "inputs"],  # overridden
    "_generate_single_turn": ["prompt_ids", "images", "multimodal_fields", "num_generations",
                              "has_tool_images"],  # called with 4 positional arguments
    "_tokenize_prompts": ["prompts"],  # called; returns (prompt_ids, images, multimodal_fields)
    "_get_per_token_logps_and_entropies": [  # called (model, input_ids, attention_mask, logits_to_keep, batch_size=)
        "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy", "compute_aux_loss",
        "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
        "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids"],
    "training_step": ["model", "inputs", "num_items_in_batch"],  # overridden
}

# attributes of a built GRPOTrainer (transformers generation) that MELTrainer reads or sets; with vLLM, TRL sets
# neither `generation_config` nor `generation_kwargs` (tests/test_vllm_standin.py builds that trainer)
ATTRIBUTES = ["num_generations", "reward_func_names", "reward_weights", "eos_token_ids", "use_vllm",
              "generation_config", "generation_kwargs", "temperature", "_metrics", "_step", "_tokenizer", "beta",
              "ref_model",
              # read by the guided analyses' own generate call (melrl.training.generation._guided_generate)
              "model_wrapped", "pad_to_multiple_of", "_dist",
              # read by the analyses' and replays' own continuous batching (generation._continuous_batching_generate)
              "use_transformers_continuous_batching", "continuous_batching_config"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_trl_methods_keep_their_signatures(name):
    parameters = list(inspect.signature(getattr(GRPOTrainer, name)).parameters)
    assert parameters[0] == "self" and parameters[1:] == METHODS[name], f"GRPOTrainer.{name}{parameters}"


def test_mel_overrides_take_the_same_arguments():
    for name in ("_calculate_rewards", "_generate_and_score_completions", "_compute_loss", "training_step"):
        mine = list(inspect.signature(getattr(MELTrainer, name)).parameters)
        assert mine == ["self", *METHODS[name]], name


def test_vllm_generation_has_a_completion_budget():
    # `melrl.training.generation.generation_budget` sets it around the analysis and replay calls on the vLLM path
    assert "max_completion_length" in inspect.signature(VLLMGeneration.__init__).parameters
    assert "self.max_completion_length = max_completion_length" in inspect.getsource(VLLMGeneration.__init__)
    # the user's generation_kwargs go into the sampling parameters after the budget (colocate) or beside it (server)
    assert "self.generation_kwargs = generation_kwargs or {}" in inspect.getsource(VLLMGeneration.__init__)
    generate = inspect.getsource(VLLMGeneration.generate)
    assert "generation_kwargs.update(self.generation_kwargs)" in generate
    assert '"generation_kwargs": self.generation_kwargs' in generate


def test_vllm_generation_reads_its_structured_outputs_regex_at_each_call():
    # `melrl.training.generation.structured_outputs` sets it around the guided analysis call on the vLLM path
    assert "structured_outputs_regex" in inspect.signature(VLLMGeneration.__init__).parameters
    assert "self.structured_outputs_regex = structured_outputs_regex" in inspect.getsource(VLLMGeneration.__init__)
    generate = inspect.getsource(VLLMGeneration.generate)
    assert '"structured_outputs_regex": self.structured_outputs_regex' in generate  # server mode
    assert "StructuredOutputsParams(regex=self.structured_outputs_regex)" in generate  # colocate mode


def test_guided_generation_uses_trls_generation_contexts():
    # `_guided_generate` generates as `_generate_single_turn`'s transformers branch does; these are its contexts
    source = inspect.getsource(GRPOTrainer._generate_single_turn)
    for needle in ("unwrap_model_for_generation(", "gather_deepspeed3_params=self.args.ds3_gather_for_generation",
                   "generation_kwargs=self.generation_kwargs", "self._dist.summon_full_params(self.model_wrapped",
                   'padding_side="left"', "generation_config=self.generation_config"):
        assert needle in source, needle


def test_continuous_batching_api_pairs_requests_by_id():
    # `generate_by_request` drives transformers' manager with its own request ids, in the contexts and configs of
    # TRL's `generate_batch` branch
    from transformers.generation.continuous_batching import ContinuousBatchingManager, ContinuousMixin
    from transformers.generation.continuous_batching.requests import GenerationOutput

    source = inspect.getsource(GRPOTrainer._generate_single_turn)
    for needle in ("generate_batch(", "continuous_batching_config=self.continuous_batching_config",
                   "gather_deepspeed3_params=self.args.ds3_gather_for_generation"):
        assert needle in source, needle
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


def test_the_training_loop_sets_the_accumulation_window():
    # `training_step` reads it to know when an accumulation window (an optimizer step) ends
    assert "self.current_gradient_accumulation_steps =" in inspect.getsource(Trainer)


def test_callbacks_used_by_the_run_files_exist():
    for event in ("on_step_begin", "on_step_end", "on_save"):
        assert callable(getattr(TrainerCallback, event))
    assert callable(Trainer.add_callback)


def test_a_built_trainer_has_what_mel_reads(tiny_model_dir, tmp_path):
    from tests.test_trainer import make_trainer

    trainer = make_trainer(tiny_model_dir, tmp_path)
    missing = [name for name in ATTRIBUTES if not hasattr(trainer, name)]
    assert not missing, f"GRPOTrainer no longer sets {missing}"
    assert isinstance(trainer._metrics["train"]["any"], list)  # a defaultdict(list) per mode
    prompt_ids, images, fields = trainer._tokenize_prompts(["What is 1 + 1?"])
    assert isinstance(prompt_ids[0][0], int) and images is None and fields == {}
    completions, _ = trainer._generate_single_turn(prompt_ids, None, {}, 1)
    assert len(completions) == 1 and all(isinstance(t, int) for t in completions[0])


def test_grpo_output_and_fused_head_give_what_mel_reads(tiny_model_dir, tmp_path):
    from tests.test_trainer import make_trainer

    trainer = make_trainer(tiny_model_dir, tmp_path)
    trainer.model.train()
    rows = [dict(trainer.train_dataset[i // 4]) for i in range(8)]  # 2 prompts x G = 4
    output = trainer._generate_and_score_completions(rows)
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages"):
        assert key in output, key
    assert output["advantages"].shape == (8,)
    ids = torch.tensor([[5, 6, 7, 8]])
    labels = torch.tensor([[-100, -100, 7, 8]])
    fused = trainer.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True)
    assert fused.log_probs.shape == (1, 3) and fused.log_probs[0, 0] == 0  # label -100 scores 0


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_grpo_loss_takes_per_token_advantages(tiny_model_dir, tmp_path, level):
    # reinforce_pp* hand TRL (B, T) advantages: TRL unsqueezes (B,) only, so row-constant (B, T) advantages give the
    # loss of their (B,) rows
    from tests.test_trainer import loss_inputs, make_trainer

    trainer = make_trainer(tiny_model_dir, tmp_path, importance_sampling_level=level, loss_type="grpo")
    inputs = loss_inputs(trainer)
    per_rollout = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    per_token = inputs["advantages"].unsqueeze(1) * inputs["completion_mask"]
    assert torch.equal(GRPOTrainer._compute_loss(trainer, trainer.model, {**inputs, "advantages": per_token}),
                       per_rollout)

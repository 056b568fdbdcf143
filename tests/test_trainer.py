"""MELTrainer on the tiny random-weight model: loss equivalence, NLL mask, run files, batched generation."""

import json
from collections import Counter

import pytest
import torch
from trl import GRPOTrainer

import melrl.cpu_decoding as cpu_decoding
import melrl.shared_prefix as shared_prefix
import melrl.trainer as trainer_module
from melrl.algorithms import sequence_mean_nll
from melrl.config import MELConfig
from melrl.experience import Pair
from melrl.meta_phase import MetaExperienceJob
from melrl.models import load_model_and_tokenizer
from melrl.prompts import ANALYSIS_TEMPLATE, REPLAY_TEMPLATE
from melrl.trainer import MELTrainer, _nll_batch


def make_config(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        analysis_max_new_tokens=10,
        analysis_max_prompt_length=512,
        max_steps=2,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        learning_rate=1e-3,
        seed=0,
        disable_tqdm=True,
    )
    values.update(overrides)
    return MELConfig(**values)


def parity_accuracy(prompts, completions, **kwargs):
    """A stand-in verdict that gives mixed groups on a random model: odd-length completions are 'correct'."""
    return [float(len(c) % 2) for c in completions]


parity_accuracy.__name__ = "accuracy"


def make_dataset(n=16):
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": [f"What is {i} + {i}?" for i in range(n)],
            "problem": [f"What is {i} + {i}?" for i in range(n)],
            "answer": [str(2 * i) for i in range(n)],
            "id": [f"p{i}" for i in range(n)],
        }
    )


def make_trainer(tiny_model_dir, tmp_path, **overrides):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    return MELTrainer(
        model=model,
        reward_funcs=[parity_accuracy],
        args=make_config(tmp_path, **overrides),
        train_dataset=make_dataset(),
        processing_class=tokenizer,
    )


def loss_inputs(trainer):
    """A hand-made rollout batch in the layout `_compute_loss` reads."""
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() in a real run
    torch.manual_seed(0)
    prompt_ids = torch.randint(10, 200, (8, 6))
    completion_ids = torch.randint(10, 200, (8, 5))
    completion_mask = torch.ones(8, 5, dtype=torch.long)
    completion_mask[0, 3:] = 0
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.linspace(-1, 1, 8),
        "num_items_in_batch": completion_mask.sum(),
    }


def job(prompt_ids, analysis_ids):
    j = MetaExperienceJob(
        pair=Pair(0, 0, 1), problem_id="p0", problem="q", gold="1", correct_solution="a",
        incorrect_solution="b", analysis_prompt_ids=list(prompt_ids),
    )
    j.analysis_ids = list(analysis_ids)
    return j


@pytest.mark.parametrize("overrides", [{"meta_experience": False}, {"mel_coef": 0.0}])
def test_loss_equals_grpo_when_meta_experience_is_off(tiny_model_dir, tmp_path, overrides):
    trainer = make_trainer(tiny_model_dir, tmp_path, **overrides)
    trainer.model.train()
    trainer._assign_nll([job([5, 6, 7], [8, 9, 2])])  # a kept M that must not count
    inputs = loss_inputs(trainer)
    mel = trainer._compute_loss(trainer.model, inputs)
    grpo = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    assert torch.equal(mel, grpo)


def test_loss_equals_grpo_when_nothing_is_kept(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path, mel_coef=1.0)
    trainer.model.train()
    trainer._assign_nll([])
    inputs = loss_inputs(trainer)
    assert torch.equal(trainer._compute_loss(trainer.model, inputs),
                       GRPOTrainer._compute_loss(trainer, trainer.model, inputs))


@pytest.mark.parametrize("packing", [True, False])
def test_loss_adds_mel_coef_times_mean_nll(tiny_model_dir, tmp_path, packing):
    trainer = make_trainer(tiny_model_dir, tmp_path, mel_coef=0.5, gradient_accumulation_steps=1,
                           nll_packing=packing)
    trainer.model.train()
    kept = [job([5, 6, 7, 11], [8, 9, 2]), job([5, 6, 13], [14, 15, 16, 17, 2])]
    trainer._assign_nll(kept)
    inputs = loss_inputs(trainer)
    mel = trainer._compute_loss(trainer.model, inputs)
    grpo = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    expected = []
    with torch.no_grad():
        for j in kept:  # each M alone, unpadded: mean NLL of its tokens given its prompt
            ids = torch.tensor([j.analysis_prompt_ids + j.analysis_ids])
            logits = trainer.model(input_ids=ids).logits[:, len(j.analysis_prompt_ids) - 1 : -1]
            target = torch.tensor([j.analysis_ids])
            expected.append(sequence_mean_nll(logits, target, torch.ones_like(target)).item())
    assert mel.item() - grpo.item() == pytest.approx(0.5 * sum(expected) / 2, rel=1e-4, abs=1e-5)
    assert ("layout" in trainer._nll_slices[0]) is packing


def test_packed_nll_computes_the_shared_context_once(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path, gradient_accumulation_steps=1)
    shared = list(range(10, 50))
    trainer._assign_nll([job(shared + [5, 6], [8, 9, 2]), job(shared + [7], [14, 2]), job([12, 13], [15, 2])])
    batch = trainer._nll_slices[0]
    assert batch["input_ids"].shape == (1, 40 + (2 + 3) + (1 + 2) + (2 + 2))
    assert batch["weight"].tolist() == [1.0, 1.0, 1.0]
    assert trainer._step_stats.counts["nll_context_tokens"] == 40 + 2 + 1 + 2
    short = make_trainer(tiny_model_dir, tmp_path / "short", gradient_accumulation_steps=1, nll_pack_max_tokens=47)
    short._assign_nll([job(shared + [5, 6], [8, 9, 2]), job(shared + [7], [14, 2])])  # together: 48 tokens
    assert short._step_stats.counts["nll_context_tokens"] == 42 + 41


@pytest.mark.parametrize("reason", ["flash-attention", "joint backward"])
def test_nll_is_not_packed_where_packed_attention_cannot_serve(tiny_model_dir, tmp_path, monkeypatch, reason):
    trainer = make_trainer(tiny_model_dir, tmp_path, gradient_accumulation_steps=1)
    if reason == "flash-attention":
        monkeypatch.setattr(trainer.model.config, "_attn_implementation", "flash_attention_2")
    else:  # DeepSpeed, FSDP: the backward (and its recompute) runs after `_compute_loss`
        monkeypatch.setattr(trainer, "_own_nll_backward", lambda: False)
    trainer._assign_nll([job([5, 6, 7], [8, 9, 2]), job([5, 6, 8], [14, 2])])
    assert "layout" not in trainer._nll_slices[0]
    assert trainer._nll_slices[0]["input_ids"].shape == (2, 6)
    assert trainer._step_stats.counts["nll_context_tokens"] == 6


def gradients_after_one_micro_step(trainer, inputs):
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainer.model, inputs)
    trainer.accelerator.backward(loss)
    return loss.item(), {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}


def test_nll_own_backward_gives_the_gradients_of_one_joint_backward(tiny_model_dir, tmp_path, monkeypatch):
    # one row per meta-experience: the joint backward never sees packed rows (see the next test)
    trainer = make_trainer(tiny_model_dir, tmp_path, mel_coef=0.5, gradient_accumulation_steps=1, nll_packing=False)
    trainer.model.train()
    trainer._assign_nll([job([5, 6, 7, 11], [8, 9, 2]), job([5, 6, 13], [14, 15, 16, 17, 2])])
    inputs = loss_inputs(trainer)
    assert trainer._own_nll_backward()  # one process
    update_sees_gradients = []
    grpo_loss = GRPOTrainer._compute_loss

    def recording(self, model, batch):
        update_sees_gradients.append(any(p.grad is not None for p in model.parameters()))
        return grpo_loss(self, model, batch)

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", recording)
    own_loss, own = gradients_after_one_micro_step(trainer, inputs)
    monkeypatch.setattr(trainer, "_own_nll_backward", lambda: False)
    joint_loss, joint = gradients_after_one_micro_step(trainer, inputs)
    assert update_sees_gradients == [True, False]  # the NLL's backward ran before the update's forward
    assert own_loss == pytest.approx(joint_loss, rel=1e-6)
    assert own.keys() == joint.keys() and own
    for name in own:
        torch.testing.assert_close(own[name], joint[name], rtol=1e-5, atol=1e-7, msg=name)


def test_nll_batch_masks_only_meta_experience_tokens():
    jobs = [job([5, 6, 7], [8, 9, 2]), job([10], [11, 12, 13, 14, 2])]
    batch = _nll_batch(jobs, pad_id=0, filler=jobs[0], device="cpu")
    assert batch["targets"].tolist() == [[8, 9, 2, 0, 0], [11, 12, 13, 14, 2]]
    assert batch["mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["input_ids"][:, :3].tolist() == [[5, 6, 7], [0, 0, 10]]  # prompts left-padded, never targets
    assert batch["weight"].tolist() == [1.0, 1.0]
    dummy = _nll_batch([], pad_id=0, filler=jobs[0], device="cpu")
    assert dummy["weight"].tolist() == [0.0]


def test_sequence_mean_nll_ignores_masked_tokens():
    logits = torch.randn(1, 4, 7)
    targets = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[1, 1, 0, 0]])
    changed = logits.clone()
    changed[:, 2:] = torch.randn(1, 2, 7)
    assert torch.allclose(sequence_mean_nll(logits, targets, mask), sequence_mean_nll(changed, targets, mask))
    by_hand = -(torch.log_softmax(logits[0, 0], -1)[1] + torch.log_softmax(logits[0, 1], -1)[2]) / 2
    assert sequence_mean_nll(logits, targets, mask).item() == pytest.approx(by_hand.item(), rel=1e-6)


def fake_judge(job, *, leak_check):
    """Accept every analysis of an even incorrect row, as if it parsed; flag every third as leaking."""
    job.parsed = job.pair.incorrect % 2 == 0
    job.parts = {"heuristics": ["h"]} if job.parsed else None
    job.parse_error = None if job.parsed else "missing sections"
    job.leaks = ["7"] if job.parsed and job.pair.correct % 3 == 0 else []


def test_two_step_training_writes_consistent_run_files(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "judge_analysis", fake_judge)
    replay_verdicts = iter([True, False] * 100)
    monkeypatch.setattr(
        trainer_module, "verify_batch", lambda texts, golds, **kw: [next(replay_verdicts) for _ in texts]
    )
    calls = Counter()
    original = MELTrainer._generate_single_turn

    def counting(self, prompt_ids, *args, **kwargs):
        calls[self.state.global_step] += 1
        return original(self, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(MELTrainer, "_generate_single_turn", counting)
    trainer = make_trainer(tiny_model_dir, tmp_path, max_pairs_per_prompt=2)
    trainer.train()

    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    experiences = [json.loads(line) for line in (run / "experiences.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert sum(m["constructed"] for m in metrics) > 0
    for m in metrics:
        mine = [e for e in experiences if e["step"] == m["step"]]
        assert m["constructed"] == len(mine)
        assert m["parsed"] == sum(e["parsed"] for e in mine)
        assert m["leaked"] == sum(e["leaked"] for e in mine)
        assert m["kept"] == sum(e["kept"] for e in mine)
        assert m["replayed"] == sum(e["parsed"] and not e["leaked"] for e in mine)
        assert m["pairs"] == m["constructed"]
        assert (m["nll"] is not None) == (m["kept"] > 0)
        assert m["nll_tokens"] == sum(e["analysis_tokens"] for e in mine if e["kept"])
        # one rollout call, one analysis call, and one replay call when something was replayed
        expected_calls = 1 + (m["constructed"] > 0) + (m["replayed"] > 0)
        assert calls[m["step"] - 1] == expected_calls
    for e in experiences:
        assert e["kept"] == (e["parsed"] and not e["leaked"] and all(e["replay_correct"]))
        assert 0 < e["analysis_tokens"] <= 10  # the analysis budget


def test_every_phase_runs_on_trls_continuous_batching(tiny_model_dir, tmp_path, monkeypatch):
    """With TRL's `use_transformers_continuous_batching`, rollouts, analyses and replays each make one
    `generate_batch` call with their own token budget, and plain `generate` never runs."""
    monkeypatch.setattr(trainer_module, "judge_analysis", fake_judge)
    monkeypatch.setattr(trainer_module, "verify_batch", lambda texts, golds, **kw: [True] * len(texts))
    trainer = make_trainer(
        tiny_model_dir, tmp_path, max_steps=1, max_pairs_per_prompt=2, use_transformers_continuous_batching=True,
        transformers_continuous_batching_config={"num_blocks": 16, "max_batch_tokens": 256},
    )
    model_class = type(trainer.model)
    budgets = []
    original = model_class.generate_batch

    def recording(self, inputs, generation_config=None, **kwargs):
        budgets.append((len(inputs), generation_config.max_new_tokens))
        return original(self, inputs, generation_config=generation_config, **kwargs)

    def refuse(self, *args, **kwargs):
        raise AssertionError("generate ran instead of generate_batch")

    monkeypatch.setattr(model_class, "generate_batch", recording)
    monkeypatch.setattr(model_class, "generate", refuse)
    trainer.train()

    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["constructed"] > 0 and line["replayed"] > 0
    args = trainer.args
    assert budgets == [(8, args.max_completion_length), (line["constructed"], args.analysis_max_new_tokens),
                       (line["replayed"] * args.replay_samples, args.replay_budget)]
    assert 0 < line["analysis_tokens"] <= line["constructed"] * args.analysis_max_new_tokens
    assert line["nll"] is not None


def test_every_generation_prefills_what_its_prompts_share_once(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "judge_analysis", fake_judge)
    monkeypatch.setattr(trainer_module, "verify_batch", lambda texts, golds, **kw: [True] * len(texts))
    plans = []
    original = shared_prefix.shared_prefill_plan

    def record(*args, **kwargs):
        plans.append(original(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(shared_prefix, "shared_prefill_plan", record)
    trainer = make_trainer(tiny_model_dir, tmp_path, max_steps=1, max_pairs_per_prompt=2, replay_samples=2)
    trainer.train()

    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["constructed"] >= 2 and line["replayed"] >= 1
    rollouts, analysis, replay = plans
    assert rollouts.rows.numel() == line["rollouts"]
    assert rollouts.distinct_ids.size(0) == line["rollouts"] // trainer.num_generations  # each prompt once
    decode = trainer.processing_class.decode
    assert ANALYSIS_TEMPLATE.split("{question}")[0].strip() in decode(analysis.prefix[0])
    # each replayed meta-experience is solved twice from the same prompt
    assert (replay.distinct_ids.size(0), replay.rows.numel()) == (line["replayed"], 2 * line["replayed"])
    assert REPLAY_TEMPLATE.split("{experience}")[0].strip() in decode(replay.distinct_ids[0])


def linear_layers(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def test_generation_runs_with_fast_cpu_decoding(tiny_model_dir, tmp_path, monkeypatch):
    seen = []

    def record(self, prompt_ids, *args, **kwargs):
        seen.append(all("forward" in vars(m) for m in linear_layers(self.model)))
        return [[7] for _ in prompt_ids], None

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", record)
    monkeypatch.setattr(cpu_decoding, "weight_major_pays", lambda weight, rows: True)  # as timing finds on some CPUs
    trainer = make_trainer(tiny_model_dir, tmp_path)
    assert trainer._generate_distributed([[1, 2], [3], [4]], max_new_tokens=4) == [[7], [7], [7]]
    assert seen == [True]
    assert not any("forward" in vars(m) for m in linear_layers(trainer.model))


def test_bf16_on_cpu_generates_without_autocast_and_trains_with_it(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "judge_analysis", fake_judge)
    monkeypatch.setattr(trainer_module, "verify_batch", lambda texts, golds, **kw: [True] * len(texts))
    trainer = make_trainer(tiny_model_dir, tmp_path, max_steps=1, bf16=True)
    autocast = {"generation": set(), "loss": set()}

    def record(module, args, kwargs):
        phase = "generation" if kwargs.get("use_cache") is not False else "loss"
        autocast[phase].add(torch.is_autocast_enabled("cpu"))

    trainer.model.model.register_forward_pre_hook(record, with_kwargs=True)  # inside accelerate's autocast wrapper
    trainer.train()

    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["kept"] >= 1 and line["nll"] is not None
    assert autocast == {"generation": {False}, "loss": {True}}
    assert "_original_forward" in vars(trainer.model)  # mixed precision stays on for what follows


def test_validation_lines_follow_their_step_in_metrics(tiny_model_dir, tmp_path):
    from melrl.train import add_validation

    trainer = make_trainer(tiny_model_dir, tmp_path, validation_benchmarks=["arith"], validation_steps=1,
                           validation_limit=2, validation_max_new_tokens=4, prompt_template="short")
    add_validation(trainer, trainer.args, data_dir=None)
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], "reward_mean" in line) for line in lines] == [(1, True), (1, False), (2, True), (2, False)]
    assert all(0.0 <= lines[i]["eval/arith/pass@1"] <= 1.0 for i in (1, 3))
    assert "eval/average/pass@1" in lines[1]


def scoring_inputs():
    """Left-padded prompts and right-padded completions, as TRL's update receives them."""
    torch.manual_seed(1)
    input_ids = torch.randint(10, 200, (4, 11))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0  # prompt padding
    attention_mask[1, -2:] = 0  # completion padding
    return input_ids, attention_mask


def score(trainer, method, entropy_coef_grad=False):
    trainer.model.zero_grad(set_to_none=True)
    input_ids, attention_mask = scoring_inputs()
    logps, entropies, _ = method(trainer.model, input_ids, attention_mask, 5, batch_size=3, compute_entropy=True)
    objective = (logps * torch.linspace(-1, 1, 4).unsqueeze(1)).sum()
    if entropy_coef_grad:
        objective = objective + entropies.sum()
    objective.backward()
    grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    return logps.detach(), entropies.detach(), grads


@pytest.mark.parametrize("entropy_coef", [0.0, 0.1])
def test_cpu_scoring_matches_trl_fused_lm_head(tiny_model_dir, tmp_path, monkeypatch, entropy_coef):
    trainer = make_trainer(tiny_model_dir, tmp_path, temperature=0.7, entropy_coef=entropy_coef)
    trainer.model.train()
    reference = score(trainer, lambda *a, **k: GRPOTrainer._get_per_token_logps_and_entropies(trainer, *a, **k),
                      entropy_coef_grad=entropy_coef > 0)

    class NoTiles:
        @staticmethod
        def apply(*args):
            raise AssertionError("TRL's tiled LM head ran on CPU")

    monkeypatch.setattr("trl.trainer.utils._ChunkedLogProbFunction", NoTiles)
    plain = score(trainer, trainer._get_per_token_logps_and_entropies, entropy_coef_grad=entropy_coef > 0)
    torch.testing.assert_close(plain[0], reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain[1], reference[1], atol=1e-5, rtol=1e-5)
    assert plain[0][1, -2:].eq(0).all() and plain[1][1, -2:].eq(0).all()  # padding scores 0, as in TRL
    assert len(plain[2]) == len(reference[2])
    for mine, theirs in zip(plain[2], reference[2], strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)

"""MELTrainer on the tiny random-weight model: loss equivalence, the NLL term, run files, generation calls."""

import json
from collections import Counter

import pytest
import torch
from trl import GRPOTrainer

import melrl.training.trainer as trainer_module
from melrl.method.algorithms import sequence_mean_nll, token_log_probs
from melrl.training.config import MELConfig
from melrl.method.pairs import Pair
from melrl.method.meta_phase import MetaExperienceJob
from melrl.models import load_model_and_tokenizer
from melrl.training.trainer import MELTrainer


def make_config(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        analysis_max_new_tokens=10,
        analysis_max_prompt_length=768,
        analysis_prompt="compact",  # half the paper prompt's tokens; the paper's is tested where named
        max_steps=2,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
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


def job(prompt_ids, analysis_ids, group=0):
    j = MetaExperienceJob(
        pair=Pair(group, 0, 1), problem_id=f"p{group}", problem="q", gold="1", correct_solution="a",
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


def mean_nll_by_hand(model, kept):
    """Each M alone, unpadded: the mean NLL of its tokens given its prompt, from temperature-1 logits."""
    values = []
    with torch.no_grad():
        for j in kept:
            ids = torch.tensor([j.analysis_prompt_ids + j.analysis_ids])
            logits = model(input_ids=ids).logits[:, len(j.analysis_prompt_ids) - 1 : -1]
            target = torch.tensor([j.analysis_ids])
            values.append(sequence_mean_nll(token_log_probs(logits, target), torch.ones_like(target)).item())
    return sum(values) / len(values)


# temperature 1: TRL's fused LM head; otherwise the temperature-1 logits of the target positions
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_loss_adds_mel_coef_times_mean_nll(tiny_model_dir, tmp_path, temperature):
    trainer = make_trainer(tiny_model_dir, tmp_path, mel_coef=0.5, gradient_accumulation_steps=1,
                           temperature=temperature)
    trainer.model.train()
    kept = [job([5, 6, 7, 11], [8, 9, 2]), job([5, 6, 13], [14, 15, 16, 17, 2])]
    trainer._assign_nll(kept)
    inputs = loss_inputs(trainer)
    mel = trainer._compute_loss(trainer.model, inputs)
    grpo = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    assert mel.item() - grpo.item() == pytest.approx(0.5 * mean_nll_by_hand(trainer.model, kept), rel=1e-4, abs=1e-5)
    assert trainer.stats.counts["nll_count"] == 2


def test_nll_averaged_per_prompt_as_eq_10(tiny_model_dir, tmp_path):
    """Two kept meta-experiences of prompt 0 and one of prompt 1: Eq. 10 averages within each prompt, then over
    prompts, (1/2) (n0 + n1) / 2 + (1/2) n2; `experience` takes (n0 + n1 + n2) / 3."""
    kept = [job([5, 6, 7], [8, 9, 2], group=0), job([5, 6, 13], [14, 15, 2], group=0), job([5, 11], [16, 2], group=1)]
    losses = {}
    for average in ("prompt", "experience"):
        trainer = make_trainer(tiny_model_dir, tmp_path / average, gradient_accumulation_steps=1, nll_average=average)
        trainer.model.train()
        trainer._assign_nll(kept)
        inputs = loss_inputs(trainer)
        losses[average] = (trainer._compute_loss(trainer.model, inputs)
                           - GRPOTrainer._compute_loss(trainer, trainer.model, inputs)).item()
    n0, n1, n2 = (mean_nll_by_hand(trainer.model, [j]) for j in kept)
    assert losses["prompt"] == pytest.approx((n0 + n1) / 4 + n2 / 2, rel=1e-4)
    assert losses["experience"] == pytest.approx((n0 + n1 + n2) / 3, rel=1e-4)


def gradients_after_one_micro_step(trainer, inputs):
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainer.model, inputs)
    trainer.accelerator.backward(loss)
    return loss.item(), {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}


def test_nll_own_backward_gives_the_gradients_of_one_joint_backward(tiny_model_dir, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_model_dir, tmp_path, mel_coef=0.5, gradient_accumulation_steps=1)
    trainer.model.train()
    trainer._assign_nll([job([5, 6, 7, 11], [8, 9, 2]), job([5, 6, 13], [14, 15, 16, 17, 2])])
    inputs = loss_inputs(trainer)
    assert trainer_module.takes_own_backward(trainer.args.optim, trainer.accelerator)  # one process
    update_sees_gradients = []
    grpo_loss = GRPOTrainer._compute_loss

    def recording(self, model, batch):
        update_sees_gradients.append(any(p.grad is not None for p in model.parameters()))
        return grpo_loss(self, model, batch)

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", recording)
    own_loss, own = gradients_after_one_micro_step(trainer, inputs)
    monkeypatch.setattr(trainer_module, "takes_own_backward", lambda optim, accelerator: False)
    joint_loss, joint = gradients_after_one_micro_step(trainer, inputs)
    assert update_sees_gradients == [True, False]  # the NLL's backward ran before the update's forward
    assert own_loss == pytest.approx(joint_loss, rel=1e-6)
    assert own.keys() == joint.keys() and own
    for name in own:
        torch.testing.assert_close(own[name], joint[name], rtol=1e-5, atol=1e-7, msg=name)


class TwoProcesses:
    """What `_assign_nll` reads of the accelerator, for process `process_index` of two."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self, process_index):
        self.process_index = process_index


@pytest.mark.parametrize("rank", [0, 1])
def test_kept_meta_experiences_are_spread_over_processes_and_micro_steps(tiny_model_dir, tmp_path, monkeypatch, rank):
    trainer = make_trainer(tiny_model_dir, tmp_path, gradient_accumulation_steps=2)  # 2 micro-steps per batch
    monkeypatch.setattr(trainer, "accelerator", TwoProcesses(rank))
    kept = [job([5, 6, 7], [8 + k, 2]) for k in range(3)]  # k -> process k % 2, micro-step (k // 2) % 2
    trainer._assign_nll(kept)
    batches = trainer._nll_batches
    assert sorted(batches) == [0, 1]
    firsts = [batches[slot]["input_ids"][:, 3].tolist() for slot in (0, 1)]
    kept = [batches[slot]["kept"].tolist() for slot in (0, 1)]
    weights = [batches[slot]["weight"].tolist() for slot in (0, 1)]
    if rank == 0:
        assert (firsts, kept) == ([[8], [10]], [[1.0], [1.0]])
    else:  # no meta-experience in micro-step 1: one zero-weight row, so that its passes match process 0's
        assert (firsts, kept) == ([[9], [8]], [[1.0], [0.0]])
    # every kept meta-experience alike: 1/3 each, wherever it trains
    assert [w for slot in (0, 1) for w in weights[slot]] == pytest.approx([1 / 3, 1 / 3] if rank == 0 else [1 / 3, 0])


def test_nll_rows_mask_only_meta_experience_tokens(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path, gradient_accumulation_steps=1)
    trainer._assign_nll([job([5, 6, 7], [8, 9, 2]), job([10], [11, 12, 13, 14, 2])])
    batch, pad = trainer._nll_batches[0], trainer.processing_class.pad_token_id
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 2, pad, pad], [pad, pad, 10, 11, 12, 13, 14, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1, 1]]
    assert batch["target_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def fake_judge(job, *, leak_check):
    """Accept every analysis of an even incorrect row, as if it parsed; flag every third as leaking."""
    job.parsed = job.pair.incorrect % 2 == 0
    job.parts = {"heuristics": ["h"]} if job.parsed else None
    job.parse_error = None if job.parsed else "missing sections"
    job.leaks = ["7"] if job.parsed and job.pair.correct % 3 == 0 else []


def test_each_rollout_gets_its_own_rewards_and_completion(tiny_model_dir, tmp_path, monkeypatch):
    trainer = make_trainer(tiny_model_dir, tmp_path, max_steps=1)
    handed = []
    monkeypatch.setattr(trainer, "_meta_experience_phase", lambda rollouts: handed.append(rollouts) or [])
    seen_rows = []
    original = MELTrainer._gather_rollouts

    def gather(self, inputs, rewards, completion_ids):
        seen_rows.extend(inputs)
        return original(self, inputs, rewards, completion_ids)

    monkeypatch.setattr(MELTrainer, "_gather_rollouts", gather)
    trainer.train()
    (rollouts,) = handed
    assert len(rollouts.completion_ids) == len(seen_rows) == 8
    for ids, reward, correct in zip(rollouts.completion_ids, rollouts.rewards.tolist(), rollouts.correct):
        text = trainer.processing_class.decode(ids, skip_special_tokens=True)
        assert reward == [float(len(text) % 2)] and correct == bool(len(text) % 2)  # parity_accuracy
    assert rollouts.problems == [row["problem"] for row in seen_rows]


# replay: every analysis that is not empty and did not leak is replayed (the paper); format: parsed ones only
@pytest.mark.parametrize("experience_filter", ["replay", "format"])
def test_two_step_training_writes_consistent_run_files(tiny_model_dir, tmp_path, monkeypatch, experience_filter):
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
    # the paper's analysis prompt (about 1030 tokens) with room for both solutions
    trainer = make_trainer(tiny_model_dir, tmp_path, max_pairs_per_prompt=2, experience_filter=experience_filter,
                           analysis_prompt="paper", analysis_max_prompt_length=1536)
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
        candidates = [e for e in mine if not e["leaked"] and e["analysis"].strip()
                      and (experience_filter == "replay" or e["parsed"] and not e["truncated"])]
        assert m["replayed"] == len(candidates) == sum(e["replayed"] for e in mine)
        assert m["pairs"] == m["constructed"]
        assert (m["nll"] is not None) == (m["kept"] > 0)
        assert m["nll_tokens"] == sum(e["analysis_tokens"] for e in mine if e["kept"])
        assert m["time_update"] > 0 and m["time_rollout"] > 0
        # one rollout call, one analysis call, and one replay call when something was replayed
        expected_calls = 1 + (m["constructed"] > 0) + (m["replayed"] > 0)
        assert calls[m["step"] - 1] == expected_calls
    for e in experiences:
        assert e["kept"] == (e["replayed"] and all(e["replay_correct"]))
        assert 0 < e["analysis_tokens"] <= 10  # the analysis budget


def test_every_phase_runs_on_trls_continuous_batching(tiny_model_dir, tmp_path, monkeypatch):
    """With TRL's `use_transformers_continuous_batching`, rollouts (TRL's `generate_batch`), analyses and replays
    (ours, with a request id per prompt) each run one continuous-batching session with their own token budget, and
    plain `generate` never runs."""
    monkeypatch.setattr(trainer_module, "judge_analysis", fake_judge)
    monkeypatch.setattr(trainer_module, "verify_batch", lambda texts, golds, **kw: [True] * len(texts))
    trainer = make_trainer(
        tiny_model_dir, tmp_path, max_steps=1, max_pairs_per_prompt=2, use_transformers_continuous_batching=True,
        transformers_continuous_batching_config={"num_blocks": 16, "max_batch_tokens": 256},
    )
    model_class = type(trainer.model)
    budgets = []
    original = model_class.continuous_batching_context_manager

    def recording(self, *args, **kwargs):
        budgets.append((kwargs["workload_hints"].num_requests, kwargs["generation_config"].max_new_tokens))
        return original(self, *args, **kwargs)

    def refuse(self, *args, **kwargs):
        raise AssertionError("generate ran instead of continuous batching")

    monkeypatch.setattr(model_class, "continuous_batching_context_manager", recording)
    monkeypatch.setattr(model_class, "generate", refuse)
    trainer.train()

    (line,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert line["constructed"] > 0 and line["replayed"] > 0
    args = trainer.args
    assert budgets == [(8, args.max_completion_length), (line["constructed"], args.analysis_max_new_tokens),
                       (line["replayed"] * args.replay_samples, args.replay_budget)]
    assert 0 < line["analysis_tokens"] <= line["constructed"] * args.analysis_max_new_tokens
    assert line["nll"] is not None


def test_validation_lines_follow_their_step_in_metrics(tiny_model_dir, tmp_path):
    from melrl.cli.train import add_validation

    trainer = make_trainer(tiny_model_dir, tmp_path, validation_benchmarks=["arith"], validation_steps=1,
                           validation_limit=2, validation_max_new_tokens=4, prompt_template="short")
    add_validation(trainer, trainer.args, data_dir=None)
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], "reward_mean" in line) for line in lines] == [(1, True), (1, False), (2, True), (2, False)]
    assert all(0.0 <= lines[i]["eval/arith/pass@1"] <= 1.0 for i in (1, 3))
    assert "eval/average/pass@1" in lines[1]


def test_reinforce_pp_puts_the_kl_in_the_token_rewards_and_not_in_the_loss(tiny_model_dir, tmp_path):
    """beta > 0: per-token advantages from the outcome reward minus beta x k1(sampling policy, reference), TRL's
    (B, T) advantages path, and a loss without TRL's own KL term (reinforce_pp_baseline shares the path)."""
    from melrl.method.algorithms import compute_advantages, kl_penalty

    algorithm = "reinforce_pp"
    trainer = make_trainer(tiny_model_dir, tmp_path, algorithm=algorithm, beta=0.5, meta_experience=False)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    with torch.no_grad():  # move the policy away from the reference, so that the KL is not 0
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    rows = [dict(trainer.train_dataset[i // 4]) for i in range(8)]  # 2 prompts x G = 4
    output = trainer._generate_and_score_completions(rows)
    mask = output["completion_mask"]
    assert output["advantages"].shape == mask.shape and output["advantages"][mask == 0].abs().sum() == 0
    input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    attention_mask = torch.cat([output["prompt_mask"], mask], dim=1)
    width = mask.size(1)
    with torch.no_grad():
        policy, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, attention_mask, width)
        reference, _, _ = trainer._get_per_token_logps_and_entropies(trainer.ref_model, input_ids, attention_mask,
                                                                     width)
    token_kl = kl_penalty(policy, reference) * mask
    assert token_kl[mask.bool()].abs().min() > 0
    rewards = trainer._total_rewards(trainer._scored[0])
    expected = compute_advantages(rewards, 4, algorithm, response_mask=mask, token_kl=token_kl, kl_coef=0.5)
    torch.testing.assert_close(output["advantages"], expected, rtol=1e-4, atol=1e-5)
    without_kl = compute_advantages(rewards, 4, algorithm, response_mask=mask)
    assert (output["advantages"] - without_kl).abs().max() > 1e-3
    assert trainer._metrics["train"]["kl_in_reward"] == [pytest.approx(token_kl.sum().item() / mask.sum().item())]

    loss = trainer._compute_loss(trainer.model, output)
    assert trainer.beta == 0.5  # restored after the loss
    shifted = {**output, "ref_per_token_logps": output["ref_per_token_logps"] + 3.0}
    assert torch.equal(trainer._compute_loss(trainer.model, shifted), loss)  # TRL's KL term is off
    trainer.beta = 0.0
    assert torch.equal(GRPOTrainer._compute_loss(trainer, trainer.model, output), loss)


def test_nll_counts_whole_per_optimizer_step_when_a_generation_spans_several(tiny_model_dir, tmp_path):
    # steps_per_generation = 2 x gradient accumulation: a generation batch's NLL rows are spread over two optimizer
    # steps, so each micro-step's share counts twice, as TRL rescales its own `dapo` normaliser: mel_coef stays
    # the NLL's weight per optimizer step
    trainer = make_trainer(tiny_model_dir, tmp_path, gradient_accumulation_steps=1, steps_per_generation=2,
                           per_device_train_batch_size=4)
    trainer.model.train()
    kept = [job([5, 6, 7], [8, 9, 2]), job([10], [11, 12, 13, 14, 2])]
    trainer._assign_nll(kept)
    batch = trainer._nll_batches[0]  # the first of the two, weight 1/2
    trainer.current_gradient_accumulation_steps = 1
    spanning = trainer._mel_loss(trainer.model, batch)
    trainer.current_gradient_accumulation_steps = 2  # one optimizer step per generation batch
    whole = trainer._mel_loss(trainer.model, batch)
    torch.testing.assert_close(spanning, 2 * whole)
    assert whole.item() == pytest.approx(0.5 * mean_nll_by_hand(trainer.model, kept[:1]), rel=1e-4)

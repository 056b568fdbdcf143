"""Evaluation: the pass@k estimator, aggregation, tables, a full run of the tiny model on every benchmark,
interrupt-and-resume, --compare, the CLI and in-training validation."""

import argparse
import importlib.machinery
import json
import math
import random
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from melrl.evaluation import average_metrics, benchmark_metrics, compare, markdown_table, pass_at_k
from melrl.evaluation.backends import (
    Completion, Request, RowSampler, TransformersBackend, choose_backend, vllm_available,
)
from melrl.evaluation.runner import BENCHMARKS, answer_format_for, evaluate, load_problems
from melrl.jsonl import read_jsonl

from tests.helpers import REAL_DATA, needs_data

# ---------------------------------------------------------------------------------------------------------------
# pass@k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 5, 11 / 12),  # 1 - C(7,5)/C(10,5) = 1 - 21/252 = 1 - 1/12
        (8, 3, 1, 3 / 8),  # pass@1 = c/n
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 1 - (200-100)/200; binomials of ~59 digits
        (8, 5, 4, 1.0),  # n - c = 3 < k = 4: every draw of 4 holds a correct sample
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_edges():
    assert pass_at_k(8, 0, 3) == 0.0  # c = 0
    assert pass_at_k(8, 8, 3) == 1.0  # c = n
    assert pass_at_k(8, 1, 8) == 1.0 and pass_at_k(8, 0, 8) == 0.0  # k = n: 1 iff c > 0
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0


@pytest.mark.parametrize("n, c, k", [(4, 1, 5), (4, 5, 2), (4, -1, 2), (0, 0, 1), (4, 1, 0), (4.0, 1, 2), (4, True, 1)])
def test_pass_at_k_rejects_bad_values(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_k_matches_the_binomial_formula():
    for n in range(1, 16):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Aggregation and tables


def _record(greedy, samples):
    return {"greedy": {"correct": greedy}, "samples": [{"correct": s} for s in samples]}


def test_benchmark_metrics_on_hand_made_verdicts():
    records = [_record(True, [1, 0, 0, 0]), _record(False, [0, 0, 0, 0]), _record(False, [1, 1, 1, 0])]
    metrics = benchmark_metrics(records, k=4, greedy=True)
    assert metrics["pass@1"] == pytest.approx(1 / 3)  # one greedy answer of three is right
    assert metrics["avg@4"] == pytest.approx((1 / 4 + 0 + 3 / 4) / 3)  # = 1/3
    assert metrics["pass@4"] == pytest.approx((1 + 0 + 1) / 3)  # two problems have a correct sample
    assert list(benchmark_metrics(records, k=4, greedy=False)) == ["avg@4", "pass@4"]
    assert benchmark_metrics(records, k=0, greedy=True) == {"pass@1": pytest.approx(1 / 3)}
    one = [_record(True, [0]), _record(True, [1])]
    assert benchmark_metrics(one, k=1, greedy=True) == {"pass@1": 1.0, "avg@1": 0.5}  # no sampled pass@1


def test_average_is_unweighted_over_benchmarks():
    # The paper's average for Qwen3-4B-Base Pass@1: (13.33 + 10.00 + 45.00 + 74.20 + 39.17) / 5 = 36.34
    metrics = {b: {"pass@1": v / 100} for b, v in zip("abcde", (13.33, 10.00, 45.00, 74.20, 39.17))}
    assert average_metrics(metrics)["pass@1"] == pytest.approx(0.3634)


def test_markdown_table_layout():
    table = markdown_table([
        ("GRPO", {"aime24": {"pass@1": 1 / 3, "avg@8": 0.25, "pass@8": 0.5}, "average": {"pass@1": 1 / 3}}),
        ("MEL", {"aime24": {"pass@1": 0.5}, "math500": {"pass@1": 0.125}}),
    ])
    header, rule, grpo, mel = table.strip().splitlines()
    assert header == ("| Run | AIME 2024 Pass@1 | AIME 2024 Avg@8 | AIME 2024 Pass@8 | MATH 500 Pass@1 | "
                      "Average Pass@1 |")
    assert rule.count("|") == header.count("|")
    assert grpo == "| GRPO | 33.33 | 25.00 | 50.00 | – | 33.33 |"
    assert mel == "| MEL | 50.00 | – | – | 12.50 | – |"


# ---------------------------------------------------------------------------------------------------------------
# Sampling


def test_row_sampler_draws_from_the_tempered_softmax():
    scores = torch.tensor([[1.0, 2.0, 0.5, -1.0, float("-inf")]]).repeat(20000, 1)  # (B, V)
    rng = random.Random(0)
    sampler = RowSampler([0.6] * 20000, [rng.getrandbits(32) for _ in range(20000)])
    out = sampler(None, scores.clone())
    assert torch.isinf(out).sum(dim=1).tolist() == [4] * 20000  # one finite score per row: the chosen token
    freq = torch.bincount(out.argmax(dim=1), minlength=5) / 20000
    assert torch.allclose(freq, torch.softmax(scores[0] / 0.6, dim=0), atol=0.012)
    assert freq[4] == 0  # a -inf token is never drawn


def test_row_sampler_greedy_rows_take_the_argmax():
    scores = torch.tensor([[0.1, 3.0, 2.9], [5.0, 1.0, 0.0]])
    assert RowSampler([0.0, 0.0], [None, None])(None, scores.clone()).argmax(dim=1).tolist() == [1, 0]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from melrl.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    return model.eval(), tokenizer


def test_a_sample_does_not_depend_on_its_batch(tiny):
    backend = TransformersBackend(*tiny)
    alone = backend.generate([Request("What is 2 + 3?", 1.0, 7, 12)])
    batched = backend.generate([Request("A much longer prompt about apples and pears.", 1.0, 8, 12),
                                Request("What is 2 + 3?", 1.0, 7, 12), Request("Hi", 0.0, None, 12)])
    assert batched[1] == alone[0]
    assert alone[0].tokens == 12 and alone[0].finish == "length"


def test_backend_choice():
    assert choose_backend("auto", model_is_loaded=True) == "transformers"
    assert choose_backend("transformers", model_is_loaded=False) == "transformers"
    if not vllm_available():
        with pytest.raises(ImportError, match="vllm"):
            choose_backend("vllm", model_is_loaded=False)
    with pytest.raises(ValueError):
        choose_backend("tgi", model_is_loaded=False)


# ---------------------------------------------------------------------------------------------------------------
# The vLLM back end, against a recording stand-in of the `vllm` module


def recording_vllm(tokenizer):
    """A `vllm` module whose engine records its seed, every SamplingParams built and every generate call, and
    answers sample i of a prompt with "<sample i of prompt p>"."""
    seen = SimpleNamespace(engine_seeds=[], params=[], calls=[])

    class SamplingParams:
        def __init__(self, n=1, temperature=1.0, seed=None, max_tokens=16, stop_token_ids=None):
            self.n, self.temperature, self.seed, self.max_tokens = n, temperature, seed, max_tokens
            seen.params.append(self)

    class LLM:
        def __init__(self, model, seed=0, dtype="auto"):
            seen.engine_seeds.append(seed)

        def get_tokenizer(self):
            return tokenizer

        def generate(self, prompts, params, use_tqdm=True):
            seen.calls.append((list(prompts), list(params)))
            return [SimpleNamespace(outputs=[
                SimpleNamespace(text=f"<sample {i} of prompt {p}>", token_ids=[0] * (i + 1), finish_reason="length")
                for i in range(sp.n)]) for p, sp in enumerate(params)]

    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM, module.SamplingParams = LLM, SamplingParams
    return module, seen


def test_vllm_groups_a_prompts_unseeded_samples_into_one_request(tiny, monkeypatch):
    module, seen = recording_vllm(tiny[1])
    monkeypatch.setitem(sys.modules, "vllm", module)
    from melrl.evaluation.backends import VLLMBackend

    backend = VLLMBackend("some/model", seed=5)
    requests = [Request(prompt, t, None, 9) for prompt in ("p", "q") for t in (0.0, 0.6, 0.6, 0.6)]  # greedy + 3
    requests += [Request("r", 0.6, 11, 9), Request("r", 0.6, 12, 9)]  # seeded requests stay alone
    out = backend.generate(requests)
    (prompts, params), = seen.calls
    assert seen.engine_seeds == [5] and prompts == ["p", "p", "q", "q", "r", "r"]
    assert [(sp.n, sp.temperature, sp.seed) for sp in params] == [
        (1, 0.0, None), (3, 0.6, None), (1, 0.0, None), (3, 0.6, None), (1, 0.6, 11), (1, 0.6, 12)]
    assert params[0] is params[2] and params[1] is params[3] and len(seen.params) == 4  # one object per setting
    assert [c.text for c in out] == [f"<sample {i} of prompt {p}>" for p, i in
                                     [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0), (3, 0), (3, 1), (3, 2), (4, 0), (5, 0)]]
    assert [c.tokens for c in out[:4]] == [1, 1, 2, 3] and out[0].finish == "length"


@needs_data
def test_vllm_evaluation_hands_the_engine_batched_sampling_parameters(tiny, tiny_model_dir, monkeypatch, tmp_path):
    module, seen = recording_vllm(tiny[1])
    monkeypatch.setitem(sys.modules, "vllm", module)
    # 2 benchmarks x 3 problems, greedy + k = 4: 5 sequences a problem, batch_size 10: 2 problems a call
    results = evaluate(tiny_model_dir, ["aime24", "amc23"], backend="vllm", limit=3, k=4, batch_size=10, seed=3,
                       max_new_tokens=8, progress=False, output_dir=str(tmp_path))
    assert seen.engine_seeds == [3]  # one engine, seeded once with the run's seed
    assert len(seen.calls) == 4  # per benchmark: 2 problems, then 1
    for prompts, params in seen.calls:
        assert len(prompts) == 2 * len(set(prompts))  # one greedy and one n = 4 request per problem
        assert [(sp.n, sp.temperature) for sp in params] == [(1, 0.0), (4, 0.6)] * len(set(prompts))
        assert len({id(sp) for sp in params}) == 2
    # What the engine got for 6 problems: 8 sampling-parameter objects and no seed (one object and one seed per
    # request before: 6 x 5 = 30 objects, 24 seeds, each sampled request on its own generator).
    assert len(seen.params) == 8 and all(sp.seed is None for sp in seen.params)
    for record in results["problems"]:  # a problem's samples are the n outputs of its one sampled request
        prompt = record["samples"][0]["text"].split(" of ")[1]
        assert [s["text"] for s in record["samples"]] == [f"<sample {i} of {prompt}" for i in range(4)]
        assert record["greedy"]["text"] != record["samples"][0]["text"]
        assert not any("seed" in s for s in record["samples"])
    assert results["config"]["backend"] == "vllm" and results["config"]["seeds"].startswith("per engine")
    assert results["counts"]["aime24"]["completions"] == 15


# ---------------------------------------------------------------------------------------------------------------
# Problem selection


@needs_data
def test_ids_select_problems_bare_or_qualified(tiny):
    problems = load_problems(["aime24", "amc23"], tiny[1], "qwen-boxed", ids=["aime24:60", "0"])
    assert [(p.benchmark, p.record.id) for p in problems] == [("aime24", "60"), ("amc23", "0")]
    with pytest.raises(ValueError, match="nope"):
        load_problems(["aime24"], tiny[1], "qwen-boxed", ids="60,nope")


@needs_data
def test_problems_are_sorted_by_prompt_length_within_a_benchmark(tiny):
    problems = load_problems(["gsm8k", "amc23"], tiny[1], "qwen-boxed", limit=5)
    assert [p.benchmark for p in problems] == ["gsm8k"] * 5 + ["amc23"] * 5
    assert [p.prompt_tokens for p in problems[:5]] == sorted(p.prompt_tokens for p in problems[:5])


# ---------------------------------------------------------------------------------------------------------------
# Full evaluation


SMALL = dict(limit=2, k=2, max_new_tokens=8, progress=False)


@needs_data
def test_full_evaluation_of_the_tiny_model_on_every_benchmark(tiny, tmp_path):
    results = evaluate(tiny, BENCHMARKS, output_dir=str(tmp_path), label="tiny", **SMALL)
    assert results["config"]["benchmarks"] == list(BENCHMARKS)
    assert set(results["metrics"]) == {*BENCHMARKS, "average"}
    for bench in (*BENCHMARKS, "average"):
        assert set(results["metrics"][bench]) == {"pass@1", "avg@2", "pass@2"}
        assert all(0.0 <= v <= 1.0 for v in results["metrics"][bench].values())
    for bench in BENCHMARKS:
        assert results["counts"][bench]["problems"] == 2 and results["counts"][bench]["completions"] == 6

    lines = read_jsonl(tmp_path / "samples.jsonl")
    assert len(lines) == 2 * len(BENCHMARKS) and len({(r["benchmark"], r["id"]) for r in lines}) == len(lines)
    for r in lines:
        assert {"benchmark", "id", "problem", "gold", "greedy", "samples", "seed"} <= set(r)
        assert {"text", "answer", "correct", "tokens", "finish"} <= set(r["greedy"]) and "seed" not in r["greedy"]
        assert len(r["samples"]) == 2 and all(isinstance(s["seed"], int) for s in r["samples"])
        assert all(1 <= s["tokens"] <= 8 for s in [r["greedy"], *r["samples"]])

    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == {key: value for key, value in results.items() if key != "problems"}
    assert on_disk["config"]["seed"] == 0 and on_disk["config"]["backend"] == "transformers"
    assert on_disk["throughput"]["generated_tokens"] == sum(
        s["tokens"] for r in lines for s in [r["greedy"], *r["samples"]])
    markdown = (tmp_path / "results.md").read_text()
    assert "| Run | AIME 2024 Pass@1 | AIME 2024 Avg@2 | AIME 2024 Pass@2 |" in markdown
    assert "Minerva-Math Pass@2 | Average Pass@1 | Average Avg@2 | Average Pass@2 |" in markdown
    assert "| tiny |" in markdown


class CountingBackend(TransformersBackend):
    """Counts generate calls and the prompts they carry; raises on call number `fail_on`."""

    def __init__(self, model, tokenizer, batch_size, fail_on=None):
        super().__init__(model, tokenizer, batch_size)
        self.calls, self.prompts, self.fail_on = 0, [], fail_on

    def generate(self, requests):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        self.prompts += [r.prompt for r in requests]
        return super().generate(requests)


@pytest.mark.filterwarnings("ignore:.*unreadable line")
@needs_data
def test_interrupted_evaluation_resumes_without_redoing_finished_problems(tiny, tmp_path):
    # 3 sequences per problem (greedy + k = 2) and batch_size 3: one problem per generate call.
    options = dict(SMALL, temperature=1.0, label="tiny")
    benchmarks = ["aime24", "amc23"]
    first = CountingBackend(*tiny, batch_size=3, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny, benchmarks, output_dir=str(tmp_path / "run"), backend=first, **options)
    assert len(read_jsonl(tmp_path / "run" / "samples.jsonl")) == 2 and not (tmp_path / "run" / "results.json").exists()
    with open(tmp_path / "run" / "samples.jsonl", "ab") as f:  # a crash in the middle of a write
        f.write(b'{"benchmark": "amc23", "id": "0", "probl')

    second = CountingBackend(*tiny, batch_size=3)
    with pytest.warns(UserWarning, match="unreadable"):
        resumed = evaluate(tiny, benchmarks, output_dir=str(tmp_path / "run"), backend=second, **options)
    assert second.calls == 2 and set(second.prompts).isdisjoint(first.prompts)

    straight = evaluate(tiny, benchmarks, output_dir=str(tmp_path / "straight"),
                        backend=CountingBackend(*tiny, batch_size=3), **options)
    lines = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert sorted((r["benchmark"], r["id"]) for r in lines) == sorted(
        (r["benchmark"], r["id"]) for r in resumed["problems"])
    assert len(lines) == 4
    assert resumed["problems"] == straight["problems"]  # same texts, answers, verdicts and seeds
    assert resumed["metrics"] == straight["metrics"] and resumed["counts"] == straight["counts"]
    assert resumed["throughput"]["problems"] == 2


class DriftingBackend:
    """Never gives the same text twice (like a GPU, whose bf16 logits depend on the batch): each text names its run
    and call. Raises KeyboardInterrupt on call number `fail_on`."""

    name = "drifting"
    batch_size = 3

    def __init__(self, tokenizer, run: str, fail_on=None):
        self.tokenizer, self.run, self.fail_on, self.calls = tokenizer, run, fail_on, 0

    def generate(self, requests):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        return [Completion(f"{self.run} call {self.calls} row {i}: \\boxed{{{i}}}", 4, "stop")
                for i in range(len(requests))]


@pytest.mark.filterwarnings("ignore:.*unreadable line")
@needs_data
def test_resume_reuses_finished_problems_exactly_and_redoes_the_rest(tiny, tmp_path):
    # batch_size 3 = greedy + k = 2: one problem a call; the first run dies in its third call
    options = dict(SMALL, limit=4, label="tiny", output_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny, ["amc23"], backend=DriftingBackend(tiny[1], "first", fail_on=3), **options)
    samples = tmp_path / "samples.jsonl"
    finished = samples.read_bytes()
    first = read_jsonl(samples)
    assert len(first) == 2
    torn = b'{"benchmark": "amc23", "id": "' + b"x" * 40  # the third problem's line, cut by a crash
    samples.write_bytes(finished + torn)

    second = DriftingBackend(tiny[1], "second")
    with pytest.warns(UserWarning, match="unreadable"):
        resumed = evaluate(tiny, ["amc23"], backend=second, **options)
    assert second.calls == 2  # the two unfinished problems, and nothing else
    assert samples.read_bytes().startswith(finished + torn + b"\n")  # finished lines kept byte for byte
    by_id = {r["id"]: r for r in resumed["problems"]}
    assert len(by_id) == 4
    for record in first:  # reused as stored, although this back end would now write other texts
        assert by_id[record["id"]] == record
    redone = [r for r in resumed["problems"] if r["id"] not in {f["id"] for f in first}]
    assert len(redone) == 2
    assert all(s["text"].startswith("second") for r in redone for s in [r["greedy"], *r["samples"]])
    assert {r["id"] for r in read_jsonl(samples)} == set(by_id) and len(read_jsonl(samples)) == 4
    assert resumed["counts"]["amc23"]["completions"] == 12 and resumed["throughput"]["problems"] == 2


@needs_data
def test_resuming_with_other_settings_is_refused(tiny, tmp_path):
    evaluate(tiny, ["amc23"], output_dir=str(tmp_path), **dict(SMALL, limit=1))
    with pytest.raises(ValueError, match="k: 2 there, 3 now"):
        evaluate(tiny, ["amc23"], output_dir=str(tmp_path), **dict(SMALL, limit=1, k=3))
    more = evaluate(tiny, ["amc23", "gsm8k"], output_dir=str(tmp_path), **SMALL)  # more problems: fine
    assert more["throughput"]["problems"] == 3 and len(read_jsonl(tmp_path / "samples.jsonl")) == 4


def test_resuming_on_another_back_end_is_refused(tmp_path):
    # the back end decides how samples are seeded: one directory holds one scheme
    from melrl.evaluation.store import CONFIG_FILE, EvalDir

    config = {"model": "m", "k": 2, "seed": 0, "backend": "transformers"}
    EvalDir(tmp_path / "a", config).close()
    with pytest.raises(ValueError, match="backend: 'transformers' there, 'vllm' now"):
        EvalDir(tmp_path / "a", {**config, "backend": "vllm"})
    EvalDir(tmp_path / "a", config).close()  # the same back end resumes
    before = {k: v for k, v in config.items() if k != "backend"}  # written before the back end was recorded
    EvalDir(tmp_path / "b", before).close()
    (tmp_path / "b" / CONFIG_FILE).write_text(json.dumps(before))
    EvalDir(tmp_path / "b", {**config, "backend": "vllm"}).close()


# ---------------------------------------------------------------------------------------------------------------
# How each benchmark's answers are read


def test_answer_format_for_each_benchmark():
    assert answer_format_for("gsm8k", "qwen-boxed") == "auto"
    assert answer_format_for("gsm8k", "dapo") == "auto"
    assert answer_format_for("gsm8k", "short") == "last_number"
    for bench in ("aime24", "aime25", "amc23", "math500", "olympiadbench", "minerva_math"):
        assert answer_format_for(bench, "qwen-boxed") == "boxed"
        assert answer_format_for(bench, "dapo") == "answer_line"
    assert answer_format_for("gsm8k", "qwen-boxed", "boxed") == "boxed"
    assert answer_format_for("math500", "qwen-boxed", "auto") == "auto"
    with pytest.raises(ValueError):
        answer_format_for("gsm8k", "qwen-boxed", "latex")


class ScriptedBackend:
    """Answers every request with `style` filled with the problem's gold answer, read from the data files."""

    name = "scripted"
    batch_size = 8

    def __init__(self, tokenizer, golds: dict[str, str], style: str):
        self.tokenizer, self.golds, self.style = tokenizer, golds, style

    def generate(self, requests):
        out = []
        for r in requests:
            gold = next(g for problem, g in self.golds.items() if problem in r.prompt)
            out.append(Completion(self.style.format(gold), 5, "stop"))
        return out


def _raw_golds() -> dict[str, str]:
    """problem text -> gold answer, read here straight from the raw files (GSM8K's "#### 18", AMC's 27.0)."""
    root = REAL_DATA
    golds = {}
    for line in read_jsonl(root / "gsm8k" / "test.jsonl")[:1]:
        golds[line["question"].strip()] = line["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    for line in read_jsonl(root / "amc23" / "test.jsonl")[:1]:
        golds[line["problem"].strip()] = str(int(float(line["answer"])))
    return golds


@needs_data
def test_each_benchmark_is_read_with_its_own_answer_format(tiny, tmp_path):
    golds = _raw_golds()
    gsm8k_style = ScriptedBackend(tiny[1], golds, "Step by step ...\n#### {}")
    options = dict(limit=1, k=0, progress=False, label="scripted")
    results = evaluate(tiny, ["gsm8k", "amc23"], backend=gsm8k_style, output_dir=str(tmp_path / "a"), **options)
    assert results["config"]["answer_formats"] == {"gsm8k": "auto", "amc23": "boxed"}
    assert results["config"]["answer_format"] is None
    on_disk = json.loads((tmp_path / "a" / "results.json").read_text())
    assert on_disk["config"]["answer_formats"] == {"gsm8k": "auto", "amc23": "boxed"}
    assert "Answers read as: GSM8K `auto`, AMC 2023 `boxed`." in (tmp_path / "a" / "results.md").read_text()
    # "#### <gold>" is right on GSM8K, read with auto; AMC's boxed mode finds no answer in it
    assert results["metrics"]["gsm8k"]["pass@1"] == 1.0 and results["metrics"]["amc23"]["pass@1"] == 0.0
    assert results["counts"]["amc23"]["no_answer"] == 1 and results["counts"]["gsm8k"]["no_answer"] == 0
    assert [r["answer_format"] for r in results["problems"]] == ["auto", "boxed"]

    boxed_style = ScriptedBackend(tiny[1], golds, "So the answer is $\\boxed{{{}}}$.")
    boxed = evaluate(tiny, ["gsm8k", "amc23"], backend=boxed_style, **options)
    assert boxed["metrics"]["gsm8k"]["pass@1"] == 1.0 and boxed["metrics"]["amc23"]["pass@1"] == 1.0

    explicit = evaluate(tiny, ["gsm8k", "amc23"], backend=gsm8k_style, answer_format="boxed",
                        output_dir=str(tmp_path / "b"), **options)
    assert explicit["config"]["answer_formats"] == {"gsm8k": "boxed", "amc23": "boxed"}
    assert explicit["config"]["answer_format"] == "boxed"
    assert explicit["metrics"]["gsm8k"]["pass@1"] == 0.0
    # the stored verdicts depend on the answer format: resuming with another one is refused
    with pytest.raises(ValueError, match="answer format of gsm8k: 'boxed' there, 'auto' now"):
        evaluate(tiny, ["gsm8k", "amc23"], backend=gsm8k_style, output_dir=str(tmp_path / "b"), **options)
    with pytest.raises(ValueError, match="answer_format"):
        evaluate(tiny, ["gsm8k"], backend=gsm8k_style, answer_format="latex", **options)


# ---------------------------------------------------------------------------------------------------------------
# --compare and the CLI


def _results_dir(path: Path, model: str, pass1: float) -> str:
    path.mkdir(parents=True)
    metrics = {"aime24": {"pass@1": pass1, "avg@8": 0.1, "pass@8": 0.3}, "average": {"pass@1": pass1}}
    (path / "results.json").write_text(json.dumps({"config": {"model": model}, "metrics": metrics}))
    return str(path)


def test_compare_puts_runs_side_by_side(tmp_path, capsys):
    a = _results_dir(tmp_path / "grpo", "grpo", 0.2)
    b = _results_dir(tmp_path / "mel", "mel", 0.25)
    table = compare([a, b])
    assert f"| {a} | 20.00 | 10.00 | 30.00 | 20.00 |" in table and f"| {b} | 25.00 |" in table

    args = _parser().parse_args(["eval", "--compare", a, b, "--output-dir", str(tmp_path / "cmp")])
    from melrl.cli.eval import run_eval

    assert run_eval(args) == 0
    assert capsys.readouterr().out.startswith(table)
    assert (tmp_path / "cmp" / "comparison.md").read_text() == table
    with pytest.raises(FileNotFoundError):
        compare([str(tmp_path)])


def _parser():
    from melrl.cli.eval import add_eval_parser

    parser = argparse.ArgumentParser(prog="melrl")
    add_eval_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_parses_the_flags():
    args = _parser().parse_args(["eval", "--model", "m"])
    assert (args.benchmarks, args.k, args.temperature, args.greedy, args.template, args.backend) == (
        "aime24,aime25,amc23,math500,olympiadbench", 8, 0.6, True, "qwen-boxed", "auto")
    args = _parser().parse_args(["eval", "--model", "m", "--benchmarks", "gsm8k,minerva_math", "--k", "4",
                                 "--temperature", "1.0", "--no-greedy", "--limit", "3", "--ids", "0,1",
                                 "--backend", "transformers", "--seed", "5", "--max-new-tokens", "64"])
    assert (args.benchmarks, args.k, args.temperature, args.greedy, args.limit, args.ids, args.seed,
            args.max_new_tokens) == ("gsm8k,minerva_math", 4, 1.0, False, 3, "0,1", 5, 64)
    assert args.answer_format is None
    args = _parser().parse_args(["eval", "--model", "m", "--answer-format", "last_number"])
    assert args.answer_format == "last_number"
    with pytest.raises(SystemExit):
        _parser().parse_args(["eval", "--model", "m", "--answer-format", "latex"])


@needs_data
def test_cli_evaluates_and_prints_the_table(tiny_model_dir, tmp_path, capsys):
    from melrl.cli.eval import default_output_dir, run_eval

    assert default_output_dir("Qwen/Qwen3-4B-Base") == Path("runs/eval/Qwen_Qwen3-4B-Base")
    args = _parser().parse_args(["eval", "--model", tiny_model_dir, "--benchmarks", "gsm8k", "--limit", "1", "--k",
                                 "1", "--max-new-tokens", "4", "--output-dir", str(tmp_path), "--no-progress"])
    assert run_eval(args) == 0
    assert "| Run | GSM8K Pass@1 | GSM8K Avg@1 | Average Pass@1 | Average Avg@1 |" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["answer_formats"] == {"gsm8k": "auto"}
    line = read_jsonl(tmp_path / "samples.jsonl")[0]
    # k = 1: the sampled Pass@1 would be Avg@1, so the Pass@1 column stays the greedy one
    assert results["metrics"]["gsm8k"] == {"pass@1": float(line["greedy"]["correct"]),
                                           "avg@1": float(line["samples"][0]["correct"])}


# ---------------------------------------------------------------------------------------------------------------
# In-training validation


@needs_data
def test_validation_callback_evaluates_every_eval_steps(tiny):
    from melrl.evaluation import ValidationCallback

    model, tokenizer = tiny
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append((module.training,
                                                                             torch.is_grad_enabled())))
    lines = []
    callback = ValidationCallback(["gsm8k", "amc23"], eval_steps=2, sink=lines.append, limit=2, max_new_tokens=8)
    model.train()
    try:
        for step in (1, 2, 3):
            state = SimpleNamespace(global_step=step, is_world_process_zero=True)
            assert callback.on_step_end(None, state, None, model=model, processing_class=tokenizer) is None
    finally:
        hook.remove()
        training_after = model.training
        model.eval()
    assert training_after  # back in train mode
    assert seen and set(seen) == {(False, False)}  # generated in eval mode, without gradients
    assert len(lines) == 1 and lines == callback.history
    assert lines[0]["step"] == 2
    assert set(lines[0]) == {"step", "eval/gsm8k/pass@1", "eval/amc23/pass@1", "eval/average/pass@1"}

"""`evaluate`: Pass@1 (greedy, T = 0), Avg@k and Pass@k (k samples at T = 0.6) of a model on math benchmarks.

Each benchmark's final answers are read with one extraction mode (`answer_format_for`): the one passed, or else the
template's, except GSM8K's, read with "auto". Problems are solved in batches; each finished problem is appended to
`samples.jsonl` at once, and a rerun with the same output directory reuses the problems found there as they are and
solves the others. With the transformers back end every sample has its own seed, derived from (seed, benchmark,
problem id, sample index); with vLLM the engine is seeded once with `seed` (`backends.VLLMBackend`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from melrl.verify.answers import ANSWER_FORMATS, extract_answer
from melrl.data import Record, load_records
from melrl.method.prompts import ANSWER_FORMAT, SOLVE_TEMPLATES, render, solve_text
from melrl.verify.verifier import verify_batch
from melrl.evaluation.backends import Completion, Request, TransformersBackend, VLLMBackend, choose_backend
from melrl.evaluation.bank import DEFAULT_RETRIEVE, ExperienceBank, Retrieval, bank_prompt_text
from melrl.evaluation.metrics import average_metrics, benchmark_metrics
from melrl.evaluation.store import EvalDir

logger = logging.getLogger("melrl.evaluation")

PAPER_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "olympiadbench")
BENCHMARKS = (*PAPER_BENCHMARKS, "gsm8k", "minerva_math")
SPLITS = {"gsm8k": "test", "arith": "test"}  # the split a benchmark is evaluated on, where there are several
DEFAULT_MAX_NEW_TOKENS = 4096  # the paper presets' max_completion_length
# Benchmarks whose models often end in prose or GSM8K style ("#### 18", "A: 18", "The answer is 18") even when asked
# for a box: read with "auto", which takes a closing \boxed{} or Answer: line first and these styles otherwise.
AUTO_ANSWER_BENCHMARKS = frozenset({"gsm8k"})
SEEDS = {  # config.seeds, by whether the back end takes a seed per sample
    True: "per sample: sha256(seed, benchmark, id, index) -> 32 bits, recorded in samples.jsonl",
    False: "per engine: the back end is seeded once with seed; samples carry no seed of their own",
}


def answer_format_for(benchmark: str, template: str, answer_format: str | None = None) -> str:
    """The extraction mode `benchmark`'s answers are read with: `answer_format` when given; else the template's
    (`melrl.method.prompts.ANSWER_FORMAT`), except "auto" for GSM8K (unless the template's is "last_number",
    which reads those styles already)."""
    if answer_format is not None:
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
        return answer_format
    own = ANSWER_FORMAT[template]
    if benchmark in AUTO_ANSWER_BENCHMARKS and own != "last_number":
        return "auto"
    return own


@dataclass(frozen=True)
class Problem:
    benchmark: str
    record: Record
    prompt: str
    prompt_tokens: int
    retrieval: Retrieval | None = None  # the bank entries in its prompt, when evaluated with a bank


@dataclass
class Settings:
    template: str
    k: int
    temperature: float
    greedy: bool
    max_new_tokens: int
    seed: int
    verifier_timeout: float | None
    answer_format: str | None = None  # None: chosen per benchmark

    def check(self) -> None:
        if self.template not in SOLVE_TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; choose one of {sorted(SOLVE_TEMPLATES)}")
        if self.answer_format is not None and self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS} or None, got {self.answer_format!r}")
        if self.k < 0 or (self.k == 0 and not self.greedy):
            raise ValueError(f"need k >= 1, or k = 0 with greedy decoding; got k={self.k}, greedy={self.greedy}")
        if self.k and not self.temperature > 0:
            raise ValueError(f"sampling needs temperature > 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def rows_per_problem(self) -> int:
        return int(self.greedy) + self.k


@dataclass
class Throughput:
    """This session's work (finished problems read back on resume are not counted)."""

    problems: int = 0
    generated_tokens: int = 0
    generation_seconds: float = 0.0
    verification_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def as_dict(self) -> dict:
        wall = time.perf_counter() - self.started
        return {
            "problems": self.problems,
            "generated_tokens": self.generated_tokens,
            "wall_seconds": round(wall, 3),
            "generation_seconds": round(self.generation_seconds, 3),
            "verification_seconds": round(self.verification_seconds, 3),
            "problems_per_minute": round(60 * self.problems / wall, 3) if wall > 0 else None,
            "tokens_per_second": (round(self.generated_tokens / self.generation_seconds, 3)
                                  if self.generation_seconds > 0 else None),
        }


def evaluate(
    model,
    benchmarks: str | Sequence[str] = PAPER_BENCHMARKS,
    *,
    template: str = "qwen-boxed",
    k: int = 8,
    temperature: float = 0.6,
    greedy: bool = True,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    limit: int | None = None,
    ids: Iterable[str] | None = None,
    output_dir: str | None = None,
    backend="auto",
    batch_size: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
    verifier_timeout: float | None = None,
    dtype: str | None = None,
    label: str | None = None,
    answer_format: str | None = None,
    experiences=None,
    retrieve: int = DEFAULT_RETRIEVE,
) -> dict:
    """Evaluate `model` (a name for `melrl.models.load_model_and_tokenizer`, or a loaded (model, tokenizer) pair).

    Returns the contents of results.json (config, metrics per benchmark and "average" as fractions, counts,
    throughput, versions) plus "problems": every problem's record as written to samples.jsonl. `backend` is
    "auto", "transformers", "vllm" or a back-end object; `batch_size` counts sequences per generate call;
    `ids` holds problem ids, bare or as "benchmark:id"; with `output_dir` the run is written there and resumable.
    `answer_format` ("auto", "boxed", "answer_line", "last_number") reads every benchmark's answers one way; by
    default each benchmark gets `answer_format_for` its name and the template, recorded in config.answer_formats.
    `experiences` (a MEL run directory, its experiences.jsonl, or an `ExperienceBank`) puts the `retrieve` most
    relevant kept meta-experiences of that bank in each problem's prompt (`melrl.evaluation.bank`), for the greedy
    answer and the samples alike; config.experiences records the bank, the retriever and the exclusions.
    """
    settings = Settings(template, k, temperature, greedy, max_new_tokens, seed, verifier_timeout, answer_format)
    settings.check()
    if retrieve < 1:
        raise ValueError(f"retrieve must be >= 1, got {retrieve}")
    bank = experiences
    if bank is not None and not isinstance(bank, ExperienceBank):
        bank = ExperienceBank(bank)  # before the model loads: a bad bank fails fast
    names = [b.strip() for b in benchmarks.split(",")] if isinstance(benchmarks, str) else list(benchmarks)
    engine, label, loaded = _open_backend(model, backend, batch_size, seed, dtype, label)
    problems = load_problems(names, engine.tokenizer, template, limit=limit, ids=ids, data_dir=data_dir,
                             bank=bank, retrieve=retrieve)
    config = _config(label, settings, engine, batch_size, names, limit, ids, problems)
    if bank is not None:
        config["experiences"] = {**bank.describe(retrieve), "exclusions": _exclusions(problems)}
    store = EvalDir(output_dir, config) if output_dir else None
    done = dict(store.done) if store else {}
    stats = Throughput()
    chunk = max(1, (batch_size or engine.batch_size) // settings.rows_per_problem)
    todo = [p for p in problems if (p.benchmark, p.record.id) not in done]
    try:
        with _eval_mode(loaded), _progress(len(problems), len(problems) - len(todo), progress) as bar:
            for part in _batches(todo, chunk):
                bar.set_postfix_str(part[0].benchmark)
                for record in solve_batch(engine, part, settings, stats):
                    done[(record["benchmark"], record["id"])] = record
                    if store:
                        store.append(record)
                bar.update(len(part))
    finally:
        if store:
            store.close()
    records = [done[(p.benchmark, p.record.id)] for p in problems]
    results = _results(config, records, settings, stats)
    if store:
        store.write_results(results)
    return {**results, "problems": records}


def load_problems(
    benchmarks: Sequence[str], tokenizer, template: str, *, limit: int | None = None,
    ids: Iterable[str] | None = None, data_dir: str | None = None, bank: ExperienceBank | None = None,
    retrieve: int = DEFAULT_RETRIEVE,
) -> list[Problem]:
    """The selected problems, benchmark by benchmark, each benchmark's sorted by prompt length (less padding).
    With a `bank`, each prompt holds the `retrieve` entries retrieved for its problem (`bank_prompt_text`)."""
    if not benchmarks:
        raise ValueError("no benchmarks given")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    wanted = _parse_ids(ids, benchmarks)
    problems, matched = [], set()
    for name in dict.fromkeys(benchmarks):
        records = load_records(name, SPLITS.get(name), data_dir=data_dir)
        if wanted is not None:
            keep = {i for b, i in wanted if b in (None, name)}
            records = [r for r in records if r.id in keep]
            matched |= {(b, r.id) for r in records for b in (None, name)}
            if not records:
                logger.info("no selected problem in %s; left out", name)
                continue
        records = records[:limit]
        found = [bank.retrieve(r.problem, retrieve) for r in records] if bank else [None] * len(records)
        prompts = [render(tokenizer, solve_text(r.problem, template) if got is None
                          else bank_prompt_text(r.problem, got, template)) for r, got in zip(records, found)]
        lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
        order = sorted(range(len(records)), key=lambda i: lengths[i])
        problems += [Problem(name, records[i], prompts[i], lengths[i], found[i]) for i in order]
    if wanted is not None and wanted - matched:
        missing = ", ".join(i if b is None else f"{b}:{i}" for b, i in sorted(wanted - matched, key=str))
        raise ValueError(f"no problem with id(s) {missing} in {', '.join(benchmarks)}")
    if not problems:
        raise ValueError("nothing to evaluate")
    return problems


def sample_seed(seed: int, benchmark: str, problem_id: str, index: int) -> int:
    """The seed of one sample: a 32-bit hash of (seed, benchmark, problem id, sample index)."""
    digest = hashlib.sha256(f"{seed}\0{benchmark}\0{problem_id}\0{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def solve_batch(engine, problems: Sequence[Problem], settings: Settings, stats: Throughput) -> list[dict]:
    """Generate the greedy answer and the k samples of each problem, verify them all, return the records."""
    seeded = getattr(engine, "per_sample_seeds", True)  # a back end that does not say gets seeds
    requests = []
    for p in problems:
        if settings.greedy:
            requests.append(Request(p.prompt, 0.0, None, settings.max_new_tokens))
        requests += [
            Request(p.prompt, settings.temperature,
                    sample_seed(settings.seed, p.benchmark, p.record.id, j) if seeded else None,
                    settings.max_new_tokens)
            for j in range(settings.k)
        ]
    start = time.perf_counter()
    completions = engine.generate(requests)
    stats.generation_seconds += time.perf_counter() - start
    if len(completions) != len(requests):
        raise RuntimeError(f"back end returned {len(completions)} completions for {len(requests)} requests")
    per = settings.rows_per_problem
    formats = [answer_format_for(p.benchmark, settings.template, settings.answer_format) for p in problems]
    verdicts: list[bool] = [False] * len(completions)
    start = time.perf_counter()
    for fmt in dict.fromkeys(formats):  # one call per extraction mode (batches hold one benchmark)
        rows = [i * per + j for i, f in enumerate(formats) if f == fmt for j in range(per)]
        ok = verify_batch([completions[r].text for r in rows], [problems[r // per].record.answer for r in rows],
                          answer_format=fmt, timeout=settings.verifier_timeout)
        for r, v in zip(rows, ok):
            verdicts[r] = v
    stats.verification_seconds += time.perf_counter() - start
    stats.problems += len(problems)
    stats.generated_tokens += sum(c.tokens for c in completions)
    records = []
    for i, p in enumerate(problems):
        rows = [_sample(c, ok, r.seed, formats[i]) for c, ok, r in
                zip(completions[i * per : (i + 1) * per], verdicts[i * per : (i + 1) * per], requests[i * per :])]
        records.append({
            "benchmark": p.benchmark, "id": p.record.id, "problem": p.record.problem, "gold": p.record.answer,
            "prompt_tokens": p.prompt_tokens, "greedy": rows[0] if settings.greedy else None,
            "samples": rows[int(settings.greedy):], "seed": settings.seed, "answer_format": formats[i],
            **(p.retrieval.record() if p.retrieval is not None else {}),
        })
    return records


def _exclusions(problems: Sequence[Problem]) -> dict:
    """Which problems had bank entries left out of their retrieval (entries whose source problem is theirs)."""
    hit = [p for p in problems if p.retrieval is not None and p.retrieval.excluded]
    return {
        "entries": sum(len(p.retrieval.excluded) for p in hit),
        "problems": len(hit),
        "ids": [f"{p.benchmark}:{p.record.id}" for p in hit],
        "without_experiences": [f"{p.benchmark}:{p.record.id}" for p in hit if not p.retrieval.entries],
    }


def _batches(problems: Sequence[Problem], size: int) -> Iterable[list[Problem]]:
    """Runs of at most `size` problems, never spanning two benchmarks."""
    part: list[Problem] = []
    for p in problems:
        if part and (len(part) == size or p.benchmark != part[0].benchmark):
            yield part
            part = []
        part.append(p)
    if part:
        yield part


def _sample(c: Completion, correct: bool, seed: int | None, answer_format: str) -> dict:
    row = {"text": c.text, "answer": extract_answer(c.text, answer_format), "correct": bool(correct),
           "tokens": c.tokens, "finish": c.finish}
    if seed is not None:
        row["seed"] = seed
    return row


def _parse_ids(ids: Iterable[str] | None, benchmarks: Sequence[str]) -> set[tuple[str | None, str]] | None:
    """{(benchmark or None, id)}: "math500:test/algebra/1.json" names one benchmark, a bare id any of them."""
    if ids is None:
        return None
    parsed = set()
    for item in ([ids] if isinstance(ids, str) else ids):
        for raw in str(item).split(","):
            raw = raw.strip()
            bench, sep, rest = raw.partition(":")
            parsed.add((bench, rest) if sep and bench in benchmarks else (None, raw))
    parsed.discard((None, ""))
    if not parsed:
        raise ValueError("ids is empty")
    return parsed


def _open_backend(model, backend, batch_size, seed, dtype, label):
    """(back end, run label, the loaded model to put in eval mode or None)."""
    is_pair = isinstance(model, (tuple, list))
    if not isinstance(backend, str):  # a ready back-end object
        return backend, label or _label(model), model[0] if is_pair else None
    kind = choose_backend(backend, model_is_loaded=is_pair)
    if kind == "vllm":
        from melrl.models import resolve_model

        return VLLMBackend(resolve_model(model), seed=seed, batch_size=batch_size, dtype=dtype or "auto"), \
            label or str(model), None
    if is_pair:
        net, tokenizer = model
    else:
        import torch

        from melrl.models import load_model_and_tokenizer

        cuda = torch.cuda.is_available()
        net, tokenizer = load_model_and_tokenizer(model, dtype=dtype or ("bfloat16" if cuda else None),
                                                  device="cuda" if cuda else None)
    return TransformersBackend(net, tokenizer, batch_size), label or _label(model), net


def _label(model) -> str:
    if isinstance(model, (tuple, list)):
        return str(getattr(getattr(model[0], "config", None), "_name_or_path", "") or "model")
    return str(model)


@contextlib.contextmanager
def _eval_mode(model):
    """Eval mode for the duration (no dropout), then the mode the model had."""
    if model is None:
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="problem", desc="melrl eval",
                dynamic_ncols=True)


def _config(label, settings: Settings, engine, batch_size, names, limit, ids, problems) -> dict:
    benchmarks = list(dict.fromkeys(p.benchmark for p in problems))
    return {
        "model": label, "template": settings.template, "k": settings.k, "temperature": settings.temperature,
        "greedy": settings.greedy, "max_new_tokens": settings.max_new_tokens, "seed": settings.seed,
        "seeds": SEEDS[getattr(engine, "per_sample_seeds", True)],
        "sampling": "pure temperature sampling (no top-p / top-k); greedy at T = 0",
        "backend": engine.name, "batch_size": batch_size or engine.batch_size,
        "benchmarks": benchmarks, "requested_benchmarks": list(names),
        "limit": limit, "ids": sorted(ids.split(",") if isinstance(ids, str) else ids) if ids is not None else None,
        "answer_format": settings.answer_format,  # as requested; None: chosen per benchmark
        "answer_formats": {b: answer_format_for(b, settings.template, settings.answer_format) for b in benchmarks},
        "verifier_timeout": settings.verifier_timeout,
        "device": _device(engine),
        "experiences": None,  # the bank, when one is used (evaluate fills it in)
    }


def _results(config: dict, records: list[dict], settings: Settings, stats: Throughput) -> dict:
    metrics, counts = {}, {}
    for bench in config["benchmarks"]:
        mine = [r for r in records if r["benchmark"] == bench]
        metrics[bench] = benchmark_metrics(mine, settings.k, settings.greedy)
        counts[bench] = _counts(mine)
    metrics["average"] = average_metrics(metrics)
    return {
        "config": config, "metrics": metrics, "counts": counts, "throughput": stats.as_dict(),
        "versions": _versions(config["backend"]), "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _counts(records: list[dict]) -> dict:
    rows = [row for r in records for row in ([r["greedy"]] if r["greedy"] else []) + r["samples"]]
    return {
        "problems": len(records),
        "completions": len(rows),
        "correct": sum(row["correct"] for row in rows),
        "no_answer": sum(row["answer"] is None for row in rows),
        "truncated": sum(row["finish"] == "length" for row in rows),
        "mean_tokens": round(sum(row["tokens"] for row in rows) / max(len(rows), 1), 1),
    }


def _versions(backend: str) -> dict:
    names = ["melrl", "torch", "transformers", "math-verify"] + (["vllm"] if backend == "vllm" else [])
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _device(engine) -> str:
    model = getattr(engine, "model", None)
    if model is None:
        return "cuda" if engine.name == "vllm" else "unknown"
    device = str(getattr(model, "device", "unknown"))
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(model.device)})"
    return f"{device} ({platform.processor() or platform.machine()})"

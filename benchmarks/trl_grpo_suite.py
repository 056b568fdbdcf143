"""Run TRL's own GRPO test file against `MELTrainer`, offline.

TRL's `tests/test_grpo_trainer.py` (from a TRL git checkout; the installed release ships no tests) is copied with its
helper modules into a work folder, beside a conftest written here that
- serves TRL's tiny test models (`trl-internal-testing/tiny-*`) from an offline hub cache of random-weight models
  built here from configs, with the tokenizer of melrl's embedded model;
- serves TRL's tiny prompt datasets (`trl-internal-testing/zen`) from small prompt-only datasets written here;
- with `--trainer mel` replaces `trl.GRPOTrainer` / `trl.GRPOConfig` by `MELTrainer` and a `MELConfig` whose
  `meta_experience` defaults to false (the loop off), with `--trainer mel-loop` by `MELTrainer` / `MELConfig` as they
  are (the loop on); `mel-loop-forced` is `mel-loop` made to run the loop in every test: the two columns the loop
  reads added to every dataset row (`problem`: the prompt's text, `answer`: a gold answer), every other rollout
  counted correct whatever TRL's test rewards say (so every group has pairs to analyse), analyses of at most 16
  tokens; `--trainer grpo` runs TRL's own classes.

Vision-language models, vLLM, accelerators and hub access are not rebuilt: those tests fail or skip alike for every
`--trainer`, so compare the pass lists, not the counts alone.

    python benchmarks/trl_grpo_suite.py --trl-git /path/to/trl/.git --work /tmp/trl-suite \\
        --output benchmarks/results/trl_grpo_suite.json
    python benchmarks/trl_grpo_suite.py --trl-git /path/to/trl/.git --work /tmp/trl-suite --trainer grpo -- -x -k train

Runs the file against each `--trainer` in turn (JUnit reports `<work>/<trainer>.xml`; `--reuse` reads them again
without running), prints the counts and, for every arm but `grpo`, how many of the tests that pass with TRL's own
classes pass with them and which do not; `--output` saves all of it with each failure's first message line.
Extra arguments after `--` go to pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ORG = "trl-internal-testing"
PROBES = ["is_joblib_available"]
TEST_FILES = ["tests/__init__.py", "tests/conftest.py", "tests/testing_utils.py", "tests/testing_constants.py",
              "tests/test_grpo_trainer.py"]
SNAPSHOT = "0" * 40
TRAINERS = ("grpo", "mel", "mel-loop", "mel-loop-forced")
GOLD = "4"
ANALYSIS_TOKENS = 16  # `mel-loop-forced`: analyses as short as TRL's tests keep their completions
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, max_position_embeddings=2048)
# hub name -> (model_type, architecture, extra config)
MODELS = {
    "tiny-Qwen2ForCausalLM-2.5": ("qwen2", "Qwen2ForCausalLM", {}),
    "tiny-Qwen2ForSequenceClassification-2.5": ("qwen2", "Qwen2ForSequenceClassification", {"num_labels": 1}),
    "tiny-Qwen3ForCausalLM": ("qwen3", "Qwen3ForCausalLM", {}),
    "tiny-Qwen3ForSequenceClassification": ("qwen3", "Qwen3ForSequenceClassification", {"num_labels": 1}),
    "tiny-Qwen3MoeForCausalLM": ("qwen3_moe", "Qwen3MoeForCausalLM",
                                 {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}),
    "tiny-LlamaForCausalLM-3.2": ("llama", "LlamaForCausalLM", {}),
    "tiny-LlamaForSequenceClassification-3.2": ("llama", "LlamaForSequenceClassification", {"num_labels": 1}),
    "tiny-MistralForCausalLM-0.2": ("mistral", "MistralForCausalLM", {}),
    "tiny-Gemma2ForCausalLM": ("gemma2", "Gemma2ForCausalLM", {}),
    "tiny-Cohere2ForCausalLM": ("cohere2", "Cohere2ForCausalLM", {}),
    "tiny-GptOssForCausalLM": ("gpt_oss", "GptOssForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
}
# 6 to train on, 2 to evaluate. TRL's own sets are longer; fewer rows only shorten the runs (every test trains whole
# epochs), and every trainer compared sees the same rows.
PROMPTS = ["The sky at noon is", "Rivers flow toward", "A triangle has", "Snow in spring", "The library opens",
           "Bread rises when", "Two plus two makes", "Owls hunt at"]

CONFTEST = '''
import dataclasses, os
import datasets

DATA = {data!r}
GOLD = {gold!r}
ANALYSIS_TOKENS = {analysis_tokens!r}
TRAINER = os.environ.get("MELRL_SUITE_TRAINER", "grpo")
_load_dataset = datasets.load_dataset


def _offline_load_dataset(path, name=None, *args, split=None, streaming=False, **kwargs):
    if not str(path).startswith("{org}/"):
        return _load_dataset(path, name, *args, split=split, streaming=streaming, **kwargs)
    folder = os.path.join(DATA, path.split("/", 1)[1], name or "default")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"offline suite: no local copy of {{path}} / {{name}}")
    splits = datasets.load_from_disk(folder)
    if TRAINER == "mel-loop-forced":  # the columns the loop reads: the prompt's text as the problem, a gold answer
        splits = splits.map(lambda row: {{"problem": row["prompt"] if isinstance(row["prompt"], str)
                                         else row["prompt"][-1]["content"], "answer": GOLD}})
    if streaming:
        splits = datasets.IterableDatasetDict({{k: v.to_iterable_dataset() for k, v in splits.items()}})
    return splits[split] if split else splits


datasets.load_dataset = _offline_load_dataset

# availability probes that TRL's newer test helpers import and this TRL release lacks: report the package absent
import trl.import_utils as _import_utils
for _probe in {probes!r}:
    if not hasattr(_import_utils, _probe):
        setattr(_import_utils, _probe, lambda: False)

if TRAINER != "grpo":
    import trl
    from melrl.training.config import MELConfig
    from melrl.training.trainer import MELTrainer

    if TRAINER == "mel":
        @dataclasses.dataclass
        class LoopOffConfig(MELConfig):
            meta_experience: bool = False

        trl.GRPOConfig = LoopOffConfig
    elif TRAINER == "mel-loop-forced":
        @dataclasses.dataclass
        class ShortAnalysesConfig(MELConfig):
            analysis_max_new_tokens: int = ANALYSIS_TOKENS

        trl.GRPOConfig = ShortAnalysesConfig
        # every other rollout correct: every group has pairs whatever TRL's test rewards are
        MELTrainer._correct = lambda self, rewards: [i % 2 == 0 for i in range(rewards.size(0))]
    else:
        trl.GRPOConfig = MELConfig
    trl.GRPOTrainer = MELTrainer

if TRAINER.startswith("mel-loop"):  # what the loop did in each test, to tell a test it ran in from one it skipped
    import json
    import melrl.training.trainer as _trainer_module

    _phase, _write = MELTrainer._meta_experience_phase, _trainer_module.write_analyses
    _counts = {{}}

    def _write_analyses(trainer, jobs):
        _counts["analyses"] = _counts.get("analyses", 0) + len(jobs)
        return _write(trainer, jobs)

    def _recorded_phase(self, rollouts):
        _counts.clear()
        kept = _phase(self, rollouts)
        record = {{"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0].split("::", 1)[-1],
                   "rollouts": len(rollouts.correct), "correct": sum(rollouts.correct),
                   "analyses": _counts.get("analyses", 0), "kept": len(kept)}}
        with open(os.path.join(os.path.dirname(DATA), TRAINER + "-phases.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\\n")
        return kept

    _trainer_module.write_analyses = _write_analyses
    MELTrainer._meta_experience_phase = _recorded_phase
'''


def extract_tests(trl_git: Path, revision: str, work: Path) -> None:
    for name in TEST_FILES:
        text = subprocess.run(["git", f"--git-dir={trl_git}", "show", f"{revision}:{name}"], check=True,
                              capture_output=True, text=True).stdout
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def build_models(hub: Path) -> None:
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    from melrl.models import ensure_embedded

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded())
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for name, (model_type, architecture, extra) in MODELS.items():
        folder = hub / f"models--{ORG}--{name}"
        snapshot = folder / "snapshots" / SNAPSHOT
        if (snapshot / "config.json").exists():
            continue
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                      **TINY, **extra)
        torch.manual_seed(0)
        try:
            model = getattr(transformers, architecture)(config)
        except Exception as error:  # an architecture this transformers cannot build from a tiny config
            print(f"skipped {name}: {error}", file=sys.stderr)
            continue
        model.save_pretrained(snapshot)
        tokenizer.save_pretrained(snapshot)
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(SNAPSHOT)


def build_datasets(data: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = {"standard_prompt_only": [{"prompt": p} for p in PROMPTS],
            "conversational_prompt_only": [{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS]}
    for config, examples in rows.items():
        folder = data / "zen" / config
        if not folder.exists():
            DatasetDict({"train": Dataset.from_list(examples[:-2]),
                         "test": Dataset.from_list(examples[-2:])}).save_to_disk(str(folder))


def summarize(junit: Path) -> dict[str, dict]:
    """Each test of a JUnit report: its outcome and, for a failure, the first line of its message."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if case.find("skipped") is not None:
            outcomes[name] = {"outcome": "skipped"}
        elif failure is not None:
            message = (failure.get("message") or "").strip().splitlines()
            outcomes[name] = {"outcome": "failed", "reason": message[0][:300] if message else ""}
        else:
            outcomes[name] = {"outcome": "passed"}
    return outcomes


def compare(runs: dict[str, dict[str, dict]]) -> dict:
    """Counts per trainer and, against the tests that pass with TRL's own classes, which pass with each other
    trainer and why the others fail (failure reasons with their counts)."""
    counts = {trainer: {state: sum(o["outcome"] == state for o in tests.values())
                        for state in ("passed", "failed", "skipped")} for trainer, tests in runs.items()}
    result = {"counts": counts}
    if "grpo" not in runs:
        return result
    reference = sorted(name for name, o in runs["grpo"].items() if o["outcome"] == "passed")
    for trainer, tests in runs.items():
        if trainer == "grpo":
            continue
        failing = {name: tests.get(name, {"outcome": "not run"}) for name in reference
                   if tests.get(name, {}).get("outcome") != "passed"}
        reasons = Counter(o.get("reason", o["outcome"]) for o in failing.values())
        result[trainer] = {"pass_of_grpos_passing": len(reference) - len(failing), "grpos_passing": len(reference),
                           "failing": sorted(failing), "reasons": dict(reasons.most_common())}
    return result


def loop_activity(phases: Path) -> dict:
    """From the loop's record of each generation batch: in how many tests it ran, and wrote analyses, and how many
    rollouts, analyses and kept meta-experiences there were."""
    records = [json.loads(line) for line in phases.read_text().splitlines() if line.strip()]
    return {"tests": len({r["test"] for r in records}),
            "tests_with_analyses": len({r["test"] for r in records if r["analyses"]}),
            "generation_batches": len(records), **{key: sum(r[key] for r in records)
                                                   for key in ("rollouts", "correct", "analyses", "kept")}}


def prepare(trl_git: Path, revision: str, work: Path) -> None:
    extract_tests(trl_git, revision, work)
    build_models(work / "hub")
    build_datasets(work / "datasets")
    (work / "conftest.py").write_text(CONFTEST.format(data=str(work / "datasets"), org=ORG, probes=PROBES, gold=GOLD,
                                                     analysis_tokens=ANALYSIS_TOKENS))
    (work / "pytest.ini").write_text("[pytest]\n")


def run_suite(work: Path, trainer: str, junit: Path, pytest_args: list[str]) -> None:
    env = {**os.environ, "HF_HUB_CACHE": str(work / "hub"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MELRL_SUITE_TRAINER": trainer, "TRL_EXPERIMENTAL_SILENCE": "1"}
    command = [sys.executable, "-m", "pytest", "tests/test_grpo_trainer.py", "-p", "no:cacheprovider",
               "-p", "no:xdist", "-c", "pytest.ini", f"--junitxml={junit}", "-q", *pytest_args]
    subprocess.run(command, cwd=work, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trl-git", type=Path, required=True, help="git directory of a TRL clone")
    parser.add_argument("--revision", default="HEAD", help="TRL revision whose tests run (default: HEAD)")
    parser.add_argument("--work", type=Path, required=True, help="work folder (tests, models, datasets, reports)")
    parser.add_argument("--trainer", nargs="+", choices=TRAINERS, default=list(TRAINERS),
                        help="which classes to run the file against, in turn (default: all)")
    parser.add_argument("--reuse", action="store_true",
                        help="read the JUnit reports already in --work instead of running a trainer again")
    parser.add_argument("--output", type=Path, help="save the counts and the comparison here (JSON)")
    args, pytest_args = parser.parse_known_args(argv)
    pytest_args = [a for a in pytest_args if a != "--"]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    revision = subprocess.run(["git", f"--git-dir={args.trl_git}", "rev-parse", args.revision], check=True,
                              capture_output=True, text=True).stdout.strip()
    if not args.reuse:
        prepare(args.trl_git, revision, work)
    runs = {}
    for trainer in args.trainer:
        junit = work / f"{trainer}.xml"
        if not args.reuse:
            (work / f"{trainer}-phases.jsonl").unlink(missing_ok=True)
            run_suite(work, trainer, junit, pytest_args)
        if not junit.exists():
            raise SystemExit(f"{junit}: no JUnit report (run without --reuse first)")
        runs[trainer] = summarize(junit)
    comparison = compare(runs)
    for trainer in runs:
        if trainer in comparison and (work / f"{trainer}-phases.jsonl").exists():
            comparison[trainer]["loop"] = loop_activity(work / f"{trainer}-phases.jsonl")
    for trainer, counts in comparison["counts"].items():
        print(f"{trainer}: " + " ".join(f"{k}={v}" for k, v in counts.items()))
    for trainer in runs:
        if trainer in comparison:
            c = comparison[trainer]
            print(f"{trainer}: {c['pass_of_grpos_passing']} of the {c['grpos_passing']} tests that pass with "
                  f"GRPOTrainer pass; failing: {', '.join(c['failing'][:8]) or '-'}"
                  + (f" and {len(c['failing']) - 8} more" if len(c["failing"]) > 8 else ""))
            for reason, count in c["reasons"].items():
                print(f"    {count:4d}  {reason[:160]}")
            if "loop" in c:
                print(f"    the loop: {json.dumps(c['loop'])}")
    if args.output:
        sys.path.insert(0, str(Path(__file__).parent))
        from results_file import save_results

        save_results({"trl_tests_revision": revision, "trl_tests": "tests/test_grpo_trainer.py",
                      "pytest_args": pytest_args, "comparison": comparison,
                      "outcomes": {trainer: dict(sorted(tests.items())) for trainer, tests in runs.items()}},
                     args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run TRL's own GRPO test file against `MELTrainer`, offline.

TRL's `tests/test_grpo_trainer.py` (from a TRL git checkout; the installed release ships no tests) is copied with its
helper modules into a work folder, beside a conftest written here that
- serves TRL's tiny test models (`trl-internal-testing/tiny-*`) from an offline hub cache of random-weight models
  built here from configs, with the tokenizer of melrl's embedded model;
- serves TRL's tiny prompt datasets (`trl-internal-testing/zen`) from small prompt-only datasets written here;
- with `--trainer mel` replaces `trl.GRPOTrainer` / `trl.GRPOConfig` by `MELTrainer` and a `MELConfig` whose
  `meta_experience` defaults to false (the loop off), with `--trainer mel-loop` by `MELTrainer` / `MELConfig` as they
  are (the loop on); `--trainer grpo` runs TRL's own classes.

Vision-language models, vLLM, accelerators and hub access are not rebuilt: those tests fail or skip alike for every
`--trainer`, so compare the pass lists, not the counts alone.

    python benchmarks/trl_grpo_suite.py --trl-git /path/to/trl/.git --work /tmp/trl-suite --trainer grpo -- -x -k train
    python benchmarks/trl_grpo_suite.py --trl-git /path/to/trl/.git --work /tmp/trl-suite --trainer mel --junit mel.xml

Extra arguments after `--` go to pytest. Prints the pass/fail/skip counts; `--junit` keeps pytest's JUnit report.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ORG = "trl-internal-testing"
PROBES = ["is_joblib_available"]
TEST_FILES = ["tests/__init__.py", "tests/conftest.py", "tests/testing_utils.py", "tests/testing_constants.py",
              "tests/test_grpo_trainer.py"]
SNAPSHOT = "0" * 40
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
_load_dataset = datasets.load_dataset


def _offline_load_dataset(path, name=None, *args, split=None, streaming=False, **kwargs):
    if not str(path).startswith("{org}/"):
        return _load_dataset(path, name, *args, split=split, streaming=streaming, **kwargs)
    folder = os.path.join(DATA, path.split("/", 1)[1], name or "default")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"offline suite: no local copy of {{path}} / {{name}}")
    splits = datasets.load_from_disk(folder)
    if streaming:
        splits = datasets.IterableDatasetDict({{k: v.to_iterable_dataset() for k, v in splits.items()}})
    return splits[split] if split else splits


datasets.load_dataset = _offline_load_dataset

# availability probes that TRL's newer test helpers import and this TRL release lacks: report the package absent
import trl.import_utils as _import_utils
for _probe in {probes!r}:
    if not hasattr(_import_utils, _probe):
        setattr(_import_utils, _probe, lambda: False)

TRAINER = os.environ.get("MELRL_SUITE_TRAINER", "grpo")
if TRAINER != "grpo":
    import trl
    from melrl.training.config import MELConfig
    from melrl.training.trainer import MELTrainer

    if TRAINER == "mel":
        @dataclasses.dataclass
        class LoopOffConfig(MELConfig):
            meta_experience: bool = False

        trl.GRPOConfig = LoopOffConfig
    else:
        trl.GRPOConfig = MELConfig
    trl.GRPOTrainer = MELTrainer
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


def summarize(junit: Path) -> dict[str, list[str]]:
    outcome: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("skipped") is not None:
            outcome["skipped"].append(name)
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome["failed"].append(name)
        else:
            outcome["passed"].append(name)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trl-git", type=Path, required=True, help="git directory of a TRL clone")
    parser.add_argument("--revision", default="HEAD", help="TRL revision whose tests run (default: HEAD)")
    parser.add_argument("--work", type=Path, required=True, help="work folder (tests, models, datasets)")
    parser.add_argument("--trainer", choices=["grpo", "mel", "mel-loop"], default="grpo")
    parser.add_argument("--junit", type=Path, help="where to keep pytest's JUnit report")
    args, pytest_args = parser.parse_known_args(argv)
    pytest_args = [a for a in pytest_args if a != "--"]
    work = args.work.resolve()
    extract_tests(args.trl_git, args.revision, work)
    build_models(work / "hub")
    build_datasets(work / "datasets")
    (work / "conftest.py").write_text(CONFTEST.format(data=str(work / "datasets"), org=ORG, probes=PROBES))
    (work / "pytest.ini").write_text("[pytest]\n")
    junit = (args.junit or work / f"{args.trainer}.xml").resolve()
    env = {**os.environ, "HF_HUB_CACHE": str(work / "hub"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "MELRL_SUITE_TRAINER": args.trainer, "TRL_EXPERIMENTAL_SILENCE": "1"}
    command = [sys.executable, "-m", "pytest", "tests/test_grpo_trainer.py", "-p", "no:cacheprovider",
               "-p", "no:xdist", "-c", "pytest.ini", f"--junitxml={junit}", "-q", *pytest_args]
    subprocess.run(command, cwd=work, env=env)
    outcome = summarize(junit)
    print(" ".join(f"{k}={len(v)}" for k, v in outcome.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

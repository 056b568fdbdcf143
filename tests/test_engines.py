"""DeepSpeed ZeRO-2, ZeRO-3 and FSDP2 with MEL on 2 CPU processes, against one process on the same global batch.

DeepSpeed runs on its CPU accelerator (`DS_ACCELERATOR=cpu`, installed with `DS_BUILD_OPS=0`), FSDP2 through
accelerate with `use_cpu: true`; both communicate over gloo. Every run keeps meta-experiences (`tests/mp_run.py`),
so the NLL's own backward pass runs under each engine. The kits run as shipped: the model loads after the training
config, as in `melrl train`, partitioned by ZeRO-3's init (`zero3_init_flag`) and, under FSDP, on the first rank only
(`fsdp_cpu_ram_efficient_loading`).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from melrl.cli import accelerate_kit
from tests.helpers import free_port, max_difference

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (make setup installs it with the dev extra)")

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 8
# the shipped kits on 2 CPU processes, and how each rank's model loads under each
ENGINES = {"zero2": "deepspeed_zero2", "zero3": "deepspeed_zero3", "fsdp": "fsdp"}
LOADED = {"zero2": ["whole", "whole"], "zero3": ["partitioned", "partitioned"], "fsdp": ["whole", "empty"]}


def run(model_dir, out: Path, engine: str | None, *options: str) -> dict:
    """rank0.json of an mp_run on one process (engine None) or two under `engine`, with how each rank's model
    loaded (`loaded`) and the pairs it kept, which must be the same on every rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    command = [sys.executable, "-m", "tests.mp_run", model_dir, str(out / "run"), str(GLOBAL_BATCH), *options]
    if engine is not None:
        config = out / "accelerate.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(accelerate_kit(ENGINES[engine], num_processes=2, use_cpu=True)))
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                   "--main_process_port", str(free_port()), *command[1:]]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads(path.read_text()) for path in sorted((out / "run").glob("rank*.json"))]
    assert all(rank["kept"] == ranks[0]["kept"] for rank in ranks)
    return {**ranks[0], "loaded": [rank["loaded"] for rank in ranks]}


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory):
    return run(tiny_model_dir, tmp_path_factory.mktemp("one"), None)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_final_weights_equal_one_process(engine, one_process, tiny_model_dir, tmp_path):
    two = run(tiny_model_dir, tmp_path, engine)
    assert sum(m["kept"] for m in metrics(tmp_path)) > 0 and two["nll_forward"] >= 1
    assert two["kept"] == one_process["kept"]
    assert two["loaded"] == LOADED[engine]
    assert one_process["max_change"] > 1e-3  # the runs trained
    assert max_difference(one_process, two) < 1e-5


# TRL makes checkpointing reentrant for LoRA under ZeRO-3, where one backward over the NLL's and the update's graphs
# would fire each layer's gradient hooks twice
def test_lora_under_zero3_with_activation_checkpointing(tiny_model_dir, tmp_path):
    two = run(tiny_model_dir, tmp_path, "zero3", "--lora", "--checkpointing")
    assert two["lora_params"] > 0
    assert [m["nll"] is not None for m in metrics(tmp_path)] == [m["kept"] > 0 for m in metrics(tmp_path)]
    assert any(m["kept"] for m in metrics(tmp_path))


def test_a_non_finite_step_is_skipped_under_deepspeed(tiny_model_dir, tmp_path):
    two = run(tiny_model_dir, tmp_path, "zero3", "--nan-at-step", "1", "--max-steps", "1")
    assert two["max_change"] == 0.0
    (line,) = metrics(tmp_path)
    assert line["skipped_update"] is True

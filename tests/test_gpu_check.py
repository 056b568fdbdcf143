"""tools/gpu_check.py on the CPU: a path that could not run (vLLM missing) fails the check unless it is skipped
by request; the summary says which paths ran, were skipped and could not run; the vLLM path trains MEL steps with
kept meta-experiences (here on the CPU stand-in of vLLM, tests/vllm_standin)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import standin_env

ROOT = Path(__file__).resolve().parents[1]
NOT_VLLM = ["mel_bf16", "zero3", "fsdp", "eval"]


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_check(*args, env=None):
    return subprocess.run([sys.executable, "tools/gpu_check.py", "--device", "cpu", *map(str, args)], cwd=ROOT,
                          env=env or dict(os.environ), capture_output=True, text=True, timeout=600)


def saved(path: Path) -> dict:
    return json.loads(path.read_text())["results"]


def test_a_path_that_failed_or_could_not_run_fails_the_check():
    check = load_check()
    results = [{"path": "mel_bf16", "status": "ran"}, {"path": "zero3", "status": "skipped"},
               {"path": "vllm_colocate", "status": "could not run"}]
    summary = check.summarize(results)
    assert summary == {"ran": ["mel_bf16"], "skipped by request": ["zero3"], "could not run": ["vllm_colocate"],
                       "failed": []}
    assert check.exit_status(summary) == 1
    assert check.exit_status(check.summarize(results[:2])) == 0
    assert check.exit_status(check.summarize([{"path": "eval", "status": "failed"}])) == 1
    assert set(check.PATHS) == {*NOT_VLLM, "vllm_colocate", "vllm_colocate_sleep"}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_fails_the_check_unless_the_user_skips_it(tmp_path):
    missing = run_check("--skip", *NOT_VLLM, "--output", tmp_path / "missing.json")
    assert missing.returncode == 1, missing.stderr[-2000:]
    assert "could not run: vllm_colocate, vllm_colocate_sleep" in missing.stdout
    results = saved(tmp_path / "missing.json")
    assert results["summary"]["skipped by request"] == NOT_VLLM
    assert [p["error"] for p in results["paths"] if p["status"] == "could not run"] == \
        ["vllm is not importable here"] * 2
    skipped = run_check("--skip", *NOT_VLLM, "vllm_colocate", "vllm_colocate_sleep")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert "skipped by request: mel_bf16, zero3, fsdp, eval, vllm_colocate, vllm_colocate_sleep" in skipped.stdout
    assert "could not run: -" in skipped.stdout
    assert run_check("--skip", "vllm").returncode == 2  # not a path: refused by name


def test_the_checks_vllm_path_trains_mel_with_kept_meta_experiences(tiny_model_dir, tmp_path):
    out = run_check("--tokenizer", tiny_model_dir, "--skip", *NOT_VLLM, "vllm_colocate",
                    "--output", tmp_path / "check.json", env=standin_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    results = saved(tmp_path / "check.json")
    assert results["summary"]["ran"] == ["vllm_colocate_sleep"]
    (path,) = [p for p in results["paths"] if p["status"] == "ran"]
    assert path["kept"] > 0 and path["nll"] is not None
    assert path["time_analysis"] > 0 and path["time_replay"] > 0 and path["time_nll"] > 0

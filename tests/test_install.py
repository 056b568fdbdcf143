"""The pinned base install, the GPU extras and the docs extra resolve together (pip's resolver, metadata only,
nothing installed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = ("Could not find a version", "No matching distribution", "Failed to establish a new connection",
               "Network is unreachable", "Temporary failure in name resolution", "Max retries exceeded")


def test_base_install_and_extras_resolve_together(tmp_path):
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), f"{ROOT}[vllm,deepspeed,tensorboard,guidance,docs,analyst]"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "DS_BUILD_OPS": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if result.returncode != 0 and "ResolutionImpossible" not in result.stderr and any(
            marker in result.stderr for marker in UNREACHABLE):
        pytest.skip(f"the package registry cannot be reached: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert {name: versions.get(name, "").split("+")[0] for name in pinned()} == pinned()


def pinned() -> dict[str, str]:
    """Every `name==version` of the base install and of the vllm, deepspeed, tensorboard, docs and analyst extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = (project["dependencies"] + extras["vllm"] + extras["deepspeed"] + extras["tensorboard"]
                    + extras["docs"] + extras["analyst"])
    pins = [Requirement(r) for r in requirements]
    return {pin.name.lower(): str(pin.specifier).removeprefix("==") for pin in pins
            if str(pin.specifier).startswith("==") and (pin.marker is None or pin.marker.evaluate())}

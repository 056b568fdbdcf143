"""Build `wheelhouse/`: what `make gpu-check` installs on a GPU machine that has no network.

    make wheelhouse                    # for the device image's Python 3.12 (WHEEL_PYTHON=3.11 for another)
    .venv/bin/python tools/wheelhouse.py --python-version 3.12 --dest wheelhouse

It holds, for Linux x86-64 and the named Python:
- the wheels of melrl's base dependencies and DeepSpeed's, resolved by pip for that platform (a dry run, metadata
  only), less torch and what comes with it (triton, nvidia-*, cuda-*), vLLM, and the few large wheels that the
  GPU image already holds (`--skip`, default `IMAGE_PROVIDES`);
- DeepSpeed built here as a wheel without compiled ops (`DS_BUILD_OPS=0`; PyPI has only its sdist), and setuptools
  and wheel, so that melrl itself installs (editable) with no network;
- `requirements.txt`: the base dependencies less torch, plus DeepSpeed: what the offline install asks for;
- `tokenizer/`: the embedded model's tokenizer files (a few MB), for the tiny model the check builds.

It prints the size of every wheel and the total, and fails if the folder is over `--limit-mib` (default 48: the
device machine takes 64 MiB in all, the repository included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Never carried: the GPU machine has its own torch (CUDA build) and must not get another.
TORCH_FAMILY = re.compile(r"^(torch|torchvision|torchaudio|triton|vllm|nvidia-(?!ml-py$).*|cuda-.*)$")
# Large wheels that the device image ('cuda') already holds (its package list, 2026-11): carried, they would take
# most of the 64 MiB that travel (pyarrow alone is over 50 MiB). Where the image lacks one, or holds a version out
# of our dependencies' ranges, the offline install stops and names it; `--skip ''` carries everything (150 MiB).
IMAGE_PROVIDES = ("pyarrow", "numpy", "pandas", "sympy", "pillow", "fonttools", "tokenizers", "hf-xet")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def closure(roots: list[str], requires: dict[str, list[str]], python_version: str) -> set[str]:
    """The packages that `roots` need on Linux x86-64 with that Python, not counting torch's family or what only
    they need (torch's own dependencies come with the GPU machine's torch)."""
    from packaging.requirements import Requirement

    environment = {"python_version": python_version, "python_full_version": python_version + ".0",
                   "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                   "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    needed: set[str] = set()
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in roots]
    while todo:
        requirement, extra = todo.pop()
        name = normalise(requirement.name)
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        if TORCH_FAMILY.match(name):
            continue
        needed.add(name)
        for extra_name in ("", *requirement.extras):
            if (name, extra_name) not in seen:
                seen.add((name, extra_name))
                todo += [(Requirement(r), extra_name) for r in requires.get(name, [])]
    return needed


def platform_flags(python_version: str) -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for tag in [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + ["manylinux2014_x86_64",
                                                                          "manylinux1_x86_64"]:
        flags += ["--platform", tag]
    return flags


def pip(*args: str, env: dict | None = None) -> None:
    command = [sys.executable, "-m", "pip", *args]
    print("+ pip", " ".join(args[:6]), "..." if len(args) > 6 else "", flush=True)
    subprocess.run(command, check=True, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=str(ROOT / "wheelhouse"))
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (device image: 3.12)")
    parser.add_argument("--skip", default=",".join(IMAGE_PROVIDES),
                        help="comma-separated packages left to the GPU image (default: %(default)s)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded model's)")
    parser.add_argument("--limit-mib", type=float, default=48.0)
    args = parser.parse_args()

    # melrl's own metadata (`make wheelhouse` runs `make setup` first, which installs it from pyproject.toml)
    declared = requires("melrl") or []
    base = [r for r in declared if "extra ==" not in r and not TORCH_FAMILY.match(requirement_name(r))]
    deepspeed = next(r.split(";")[0].strip() for r in declared if requirement_name(r) == "deepspeed")
    skip = {normalise(name) for name in args.skip.split(",") if name.strip()}
    dest = Path(args.dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    # DeepSpeed: an sdist; built here against this environment's torch, with no compiled ops (a pure wheel).
    pip("wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(dest), deepspeed,
        env={**os.environ, "DS_BUILD_OPS": "0"})

    # What the target platform needs: pip's own resolution, metadata only.
    requests = [*base, deepspeed, "setuptools>=68", "wheel"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        pip("install", "--dry-run", "--quiet", "--ignore-installed", "--target", str(Path(tmp) / "target"),
            "--find-links", str(dest), "--report", str(report), *platform_flags(args.python_version), *requests)
        items = json.loads(report.read_text())["install"]
    resolved = {normalise(item["metadata"]["name"]): item["metadata"]["version"] for item in items}
    needed = closure(requests, {normalise(item["metadata"]["name"]): item["metadata"].get("requires_dist", [])
                                for item in items}, args.python_version)
    left_out = sorted(n for n in resolved if n not in needed or n in skip)
    wanted = [f"{n}=={v}" for n, v in sorted(resolved.items()) if n not in left_out and n != "deepspeed"]
    pip("download", "--no-deps", "--quiet", "-d", str(dest), *platform_flags(args.python_version), *wanted)

    (dest / "requirements.txt").write_text(
        "# melrl's base dependencies less torch, and DeepSpeed: `make gpu-check` installs these from this folder\n"
        + "\n".join([*base, deepspeed]) + "\n")
    (dest / "left_out.txt").write_text(
        "# resolved for the target but not carried: torch and its kin, and what the GPU image holds\n"
        + "\n".join(f"{n}=={resolved[n]}" for n in left_out) + "\n")

    tokenizer = Path(args.tokenizer) if args.tokenizer else None
    if tokenizer is None:
        from melrl.models import resolve_model

        tokenizer = Path(resolve_model("smollm2-135m-instruct"))
    (dest / "tokenizer").mkdir()
    for name in TOKENIZER_FILES:
        if (tokenizer / name).exists():
            shutil.copy2(tokenizer / name, dest / "tokenizer" / name)

    wheels = sorted(dest.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:8.2f} MiB  {wheel.name}")
    tokenizer_bytes = sum(p.stat().st_size for p in (dest / "tokenizer").iterdir())
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 2**20:.1f} MiB; tokenizer "
          f"{tokenizer_bytes / 2**20:.1f} MiB; {dest} in all: {total / 2**20:.1f} MiB")
    print("left to the GPU image:", ", ".join(f"{n} {resolved[n]}" for n in left_out))
    if total > args.limit_mib * 2**20:
        print(f"over the limit of {args.limit_mib} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `melrl` command: `train`, `demo`, `eval`, `report`, `experiences`, `solve`, `prepare-model`, `data`.

Heavy imports happen inside each command, so that `melrl --help` is quick. Every command checks its datasets before
it loads a model; a dataset or configuration error ends it with one line on stderr and exit status 2 (`--debug`
shows the traceback)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from importlib import resources
from pathlib import Path


def preset_path(name: str) -> Path:
    """A YAML preset shipped in `melrl/configs` (also at `configs/` in the repository)."""
    path = Path(str(resources.files("melrl") / "configs" / name))
    if not path.exists():
        raise FileNotFoundError(f"no preset {name!r} in {path.parent}")
    return path


def accelerate_kit(name: str, *, num_processes: int, use_cpu: bool) -> dict:
    """The accelerate config of a shipped kit (`configs/accelerate/NAME.yaml`) for `num_processes` processes on one
    machine, in fp32 on the CPU or in the kit's precision on GPUs; its engine settings as shipped."""
    import yaml

    config = yaml.safe_load(preset_path(f"accelerate/{name}.yaml").read_text())
    return {**config, "num_processes": num_processes, "use_cpu": use_cpu,
            "mixed_precision": "no" if use_cpu else config["mixed_precision"]}


class ConfigError(ValueError):
    """Settings a command cannot run with (a bad config file, key or value)."""


def parse_train_args(argv: list[str]):
    """YAML (`--config FILE`) plus `--key value` overrides, in TRL's style; unknown keys are errors."""
    from trl import TrlParser

    from melrl.cli.train import RunArguments
    from melrl.training.config import MELConfig

    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        check_config_keys(Path(argv[argv.index("--config") + 1]), (RunArguments, MELConfig))
    parser = TrlParser((RunArguments, MELConfig), prog="melrl train")
    try:
        run, config = parser.parse_args_and_config(argv)
    except ValueError as error:  # a value the config classes refuse
        raise ConfigError(str(error)) from error
    return run, config


def check_config_keys(path: Path, dataclass_types) -> None:
    """Fail on a YAML key no dataclass knows, naming the file and the key, before anything is built."""
    import dataclasses

    import yaml

    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config file must be a YAML mapping of keys to values")
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)} | {"env"}
    unknown = sorted(set(values) - known)
    if unknown:
        import difflib

        hints = [f"{key!r} (did you mean {difflib.get_close_matches(key, known, 1)[0]!r}?)"
                 if difflib.get_close_matches(key, known, 1) else repr(key) for key in unknown]
        raise ConfigError(f"{path}: unknown key(s) {', '.join(hints)}; `melrl train --help` lists the keys")


def check_run_datasets(run, config) -> None:
    """The training data and the validation benchmarks are there (downloaded when missing) before a model loads."""
    from melrl.data import ensure_dataset

    ensure_dataset(run.dataset_name, run.dataset_split, data_dir=run.data_dir)
    if config.validation_steps and config.validation_benchmarks:
        from melrl.evaluation.runner import SPLITS

        for name in config.validation_benchmarks:
            ensure_dataset(name, SPLITS.get(name), data_dir=run.data_dir)


def check_analyst_endpoint(config) -> None:
    """With `analyst: endpoint`, the server answers and serves the model, before a model loads."""
    if config.analyst != "endpoint" or not config.meta_experience:
        return
    from melrl.training.analyst_client import AnalystEndpointError, EndpointSettings, check_endpoint

    try:
        check_endpoint(EndpointSettings.from_config(config))
    except AnalystEndpointError as error:
        raise ConfigError(str(error)) from error


def split_resume(argv: list[str]) -> tuple[list[str], str | None]:
    """Take `--resume [CHECKPOINT]` out of the arguments: a checkpoint folder, or "last" when none is given."""
    if "--resume" not in argv:
        return argv, None
    i = argv.index("--resume")
    if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        return argv[:i] + argv[i + 2 :], argv[i + 1]
    return argv[:i] + argv[i + 1 :], "last"


def cmd_train(argv: list[str]) -> int:
    from melrl.cli.train import run_training

    argv, resume = split_resume(argv)
    run, config = parse_train_args(argv)
    check_run_datasets(run, config)
    check_analyst_endpoint(config)
    if resume is not None:
        config.resume_from_checkpoint = resume
    run_training(run, config)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from melrl.report.summary import print_run_summary
    from melrl.cli.train import run_training

    argv = ["--config", str(preset_path("demo.yaml"))]
    if args.steps is not None:
        argv += ["--max_steps", str(args.steps)]
    if args.output_dir is not None:
        argv += ["--output_dir", args.output_dir]
    run, config = parse_train_args(argv)
    check_run_datasets(run, config)
    print(f"melrl demo: MEL on {run.model_name_or_path} with '{run.dataset_name}' problems, {config.max_steps} steps, "
          f"run directory {config.output_dir}", flush=True)
    run_training(run, config, compact_progress=True)
    print_run_summary(config.output_dir)
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    from melrl.cli.solve import solve_and_verify
    from melrl.data import ensure_dataset

    ensure_dataset(args.dataset, args.split, data_dir=args.data_dir)
    results = solve_and_verify(
        args.model, args.dataset, split=args.split, limit=args.limit, template=args.template,
        max_new_tokens=args.max_new_tokens, data_dir=args.data_dir,
    )
    for r in results:
        mark = "✓" if r["correct"] else "✗"
        print(f"{mark} [{r['id']}] gold={r['gold']!r} answer={r['answer']!r}")
    correct = sum(r["correct"] for r in results)
    print(f"{correct}/{len(results)} correct")
    return 0


def cmd_prepare_model(args: argparse.Namespace) -> int:
    from melrl.models import resolve_model

    print(resolve_model(args.model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="melrl", description="Meta-Experience Learning for LLM reasoning, on TRL.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a dataset or configuration error (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "train", add_help=False,
        help="train with MEL or a baseline: melrl train --config FILE.yaml [--key value ...] [--resume [CKPT]]",
    )

    demo = sub.add_parser("demo", help="MEL on the embedded model and arithmetic problems, on the CPU")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    demo.add_argument("--output-dir", default=None, help="run directory (default: runs/demo)")

    solve = sub.add_parser("solve", help="let a model solve a few problems and verify its answers")
    solve.add_argument("--model", default="smollm2-135m-instruct", help="embedded name, local folder or hub id")
    solve.add_argument("--dataset", default="arith", help="dataset name or file")
    solve.add_argument("--split", default=None)
    solve.add_argument("--limit", type=int, default=4)
    solve.add_argument("--template", default="short", help="solve template: qwen-boxed, dapo or short")
    solve.add_argument("--max-new-tokens", type=int, default=64)
    solve.add_argument("--data-dir", "--data_dir", default=None,
                       help="data folder (default: $MELRL_DATA_DIR, else the per-user cache)")

    prepare = sub.add_parser("prepare-model", help="convert an embedded model into the cache; print its folder")
    prepare.add_argument("model", nargs="?", default="smollm2-135m-instruct")

    from melrl.cli.data import add_data_parser
    from melrl.cli.eval import add_eval_parser
    from melrl.cli.report import add_report_parsers

    add_eval_parser(sub)
    add_report_parsers(sub)
    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(level=os.environ.get("MELRL_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    # Deprecation notices about upstream internals are not actionable for a user of melrl.
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from melrl.data import DatasetError

    try:
        return run_command(argv)
    except (DatasetError, ConfigError) as error:
        if debug:
            raise
        command = " ".join(["melrl", *[a for a in argv[:1] if not a.startswith("-")]])
        print(f"{command}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


def run_command(argv: list[str]) -> int:
    if argv and argv[0] == "train":
        return cmd_train(argv[1:])
    args = build_parser().parse_args(argv)
    from melrl.cli.data import run_data
    from melrl.cli.eval import run_eval
    from melrl.cli.report import run_experiences, run_report

    commands = {"demo": cmd_demo, "solve": cmd_solve, "prepare-model": cmd_prepare_model, "eval": run_eval,
                "report": run_report, "experiences": run_experiences, "data": run_data}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

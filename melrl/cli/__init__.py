"""The `melrl` command: `train`, `demo`, `eval`, `report`, `experiences`, `solve`, `prepare-model`."""

from melrl.cli.main import build_parser, check_config_keys, main, parse_train_args, preset_path

__all__ = ["build_parser", "check_config_keys", "main", "parse_train_args", "preset_path"]

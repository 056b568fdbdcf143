"""The `melrl` command: `train`, `demo`, `eval`, `report`, `experiences`, `solve`, `prepare-model`."""

from melrl.cli.main import accelerate_kit, build_parser, check_config_keys, main, parse_train_args, preset_path

__all__ = ["accelerate_kit", "build_parser", "check_config_keys", "main", "parse_train_args", "preset_path"]

"""Datasets: the registered math benchmarks and training sets, local files, the hub, and the arith generator."""

from melrl.data.loaders import (
    DATA_DIR_ENV,
    DatasetError,
    Record,
    default_data_dir,
    load_records,
    load_records_with_report,
)

__all__ = ["DATA_DIR_ENV", "DatasetError", "Record", "default_data_dir", "load_records", "load_records_with_report"]

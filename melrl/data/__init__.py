"""Datasets: the registered math benchmarks and training sets (pinned files, downloaded into the data folder when
missing), local files, the hub, and the arith generator."""

from melrl.data.errors import DatasetError
from melrl.data.files import (
    DATA_DIR_ENV,
    MIRROR_ENV,
    OFFLINE_ENVS,
    default_data_dir,
    download_datasets,
    verify_datasets,
)
from melrl.data.loaders import Record, ensure_dataset, load_records, load_records_with_report
from melrl.data.sources import REGISTERED, PinnedFile

__all__ = [
    "DATA_DIR_ENV", "MIRROR_ENV", "OFFLINE_ENVS", "REGISTERED", "DatasetError", "PinnedFile", "Record",
    "default_data_dir", "download_datasets", "ensure_dataset", "load_records", "load_records_with_report",
    "verify_datasets",
]

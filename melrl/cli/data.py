"""`melrl data list | download | verify`: the registered datasets, their pinned sources, and the data folder."""

from __future__ import annotations

import argparse
import os

from melrl.data.files import (
    DATA_DIR_ENV,
    check_file,
    download_base,
    download_file,
    human_size,
    registered_files,
    resolve_data_dir,
    verify_datasets,
)
from melrl.data.loaders import repairs_of


def add_data_parser(subparsers) -> None:
    """Register `data` and its subcommands on `melrl`'s subparsers."""
    data = subparsers.add_parser(
        "data", help="the registered datasets: list them, download them, verify their checksums",
        description="The registered datasets' files come from public repositories at pinned commits, each checked "
                    f"against its sha256. They live in the data folder: --dir, else ${DATA_DIR_ENV}, else "
                    "$XDG_CACHE_HOME/melrl/data (~/.cache/melrl/data).",
    )
    actions = data.add_subparsers(dest="data_command", required=True)
    listing = actions.add_parser("list", help="each dataset: rows, splits, source, checksum, licence, where it is")
    download = actions.add_parser("download", help="download the datasets the data folder lacks (all by default)")
    download.add_argument("names", nargs="*", metavar="NAME", help="registered dataset names (default: all)")
    download.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    verify = actions.add_parser("verify", help="check the size and sha256 of the files present; exit 1 on a mismatch")
    verify.add_argument("names", nargs="*", metavar="NAME", help="registered dataset names (default: all)")
    for action in (listing, download, verify):
        action.add_argument("--dir", "--data-dir", "--data_dir", dest="dir", default=None,
                            help=f"data folder (default: ${DATA_DIR_ENV}, else the per-user cache)")


def run_data(args: argparse.Namespace) -> int:
    directory = resolve_data_dir(args.dir)
    origin = "--dir" if args.dir is not None else DATA_DIR_ENV if os.environ.get(DATA_DIR_ENV) else "per-user cache"
    print(f"data folder: {directory} ({origin})")
    return {"list": _list, "download": _download, "verify": _verify}[args.data_command](args, directory)


def _list(args: argparse.Namespace, directory) -> int:
    for name, split, pin in registered_files():
        path = directory / pin.file
        where = f"present: {path}" if path.is_file() else f"not downloaded (would go to {path})"
        print(f"\n{name} [{split}]  {pin.rows:,} rows  {where}")
        print(f"    source   {pin.source}")
        print(f"    url      {pin.url(download_base())}")
        print(f"    sha256   {pin.sha256}  ({pin.size:,} bytes)")
        print(f"    licence  {pin.licence}")
        for repair in repairs_of(name):
            print(f"    repaired as it loads: id {repair.id}, {repair.why}")
    print("\narith: generated on the fly (no file)")
    return 0


def _download(args: argparse.Namespace, directory) -> int:
    for name, _, pin in registered_files(args.names or None):
        state = check_file(pin, directory).state
        if state == "ok":
            print(f"{pin.file}: present, sha256 matches")
            continue
        verb = "replacing a copy with another checksum" if state == "mismatch" else "downloading"
        print(f"{pin.file}: {verb} ({human_size(pin.size)}) from {pin.url(download_base())}", flush=True)
        download_file(name, pin, directory, progress=args.progress)
        print(f"{pin.file}: downloaded, sha256 matches")
    return 0


def _verify(args: argparse.Namespace, directory) -> int:
    differ = 0
    for _, _, check in verify_datasets(args.names or None, directory):
        if check.state == "mismatch":
            differ += 1
            print(f"{check.pin.file}: DIFFERS: sha256 {check.sha256} ({check.size:,} bytes), pinned "
                  f"{check.pin.sha256} ({check.pin.size:,} bytes); `melrl data download` replaces it")
        else:
            print(f"{check.pin.file}: {'ok' if check.state == 'ok' else 'missing'}")
    return 1 if differ else 0

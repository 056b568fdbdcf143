"""The data folder and the registered files in it: where the folder is, downloading a missing file (kept only when
its sha256 is the pinned one), and checking the files present.

The folder is `data_dir` when given, else `$MELRL_DATA_DIR`, else `$XDG_CACHE_HOME/melrl/data` (`~/.cache/melrl/data`).
A registered file that is not there is downloaded once, with a one-line notice, from the public host or from the
mirror named by `$MELRL_DATA_MIRROR`; `MELRL_OFFLINE=1` or `HF_HUB_OFFLINE=1` make that an error instead.
Downloads go through pooch: a temporary file in the target folder, renamed only once its sha256 matches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from melrl.data.errors import DatasetError
from melrl.data.sources import PUBLIC_HOST, REGISTERED, PinnedFile

DATA_DIR_ENV = "MELRL_DATA_DIR"
MIRROR_ENV = "MELRL_DATA_MIRROR"
OFFLINE_ENVS = ("MELRL_OFFLINE", "HF_HUB_OFFLINE")
DOWNLOAD_RETRIES = 2  # pooch waits 1 s, then 2 s, between tries
DOWNLOAD_TIMEOUT = (10, 60)  # seconds to connect, seconds without a byte

_TRUE = {"1", "true", "yes", "on"}


def default_data_dir() -> Path:
    """`$MELRL_DATA_DIR` if set, else the per-user cache `$XDG_CACHE_HOME/melrl/data` (`~/.cache/melrl/data`)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "melrl" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def offline_switch() -> str | None:
    """The environment variable that turns downloads off (`MELRL_OFFLINE` or `HF_HUB_OFFLINE` set true), if any."""
    return next((name for name in OFFLINE_ENVS if os.environ.get(name, "").strip().lower() in _TRUE), None)


def download_base() -> str:
    """Where files are downloaded from: `$MELRL_DATA_MIRROR` (same layout as the public host) or the public host."""
    return os.environ.get(MIRROR_ENV) or PUBLIC_HOST


def human_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB" if size >= 1e3 else f"{size} bytes"


def _remedy(name: str, pin: PinnedFile) -> str:
    return (f"run `melrl data download {name}` where {urlsplit(download_base()).netloc or download_base()} is "
            f"reachable, set {MIRROR_ENV} to a mirror, or set {DATA_DIR_ENV} to a folder that holds {pin.file}")


def ensure_file(name: str, pin: PinnedFile, directory: Path, *, progress: bool = True) -> Path:
    """The path of `pin`'s file in `directory`, downloaded first (with a one-line notice) when it is missing."""
    path = directory / pin.file
    if path.is_file():
        return path
    if not offline_switch():
        print(f"melrl: dataset {name!r} is not in {directory}: downloading {pin.file} ({human_size(pin.size)}) "
              f"from {pin.url(download_base())}", file=sys.stderr, flush=True)
    return download_file(name, pin, directory, progress=progress)


def download_file(name: str, pin: PinnedFile, directory: Path, *, progress: bool = True,
                  retries: int = DOWNLOAD_RETRIES) -> Path:
    """Download `pin`'s file into `directory` unless a copy with the pinned sha256 is there (a copy that differs is
    replaced). Nothing is left behind when the download fails or its checksum differs: a `DatasetError` says why."""
    import pooch
    import requests

    target = directory / pin.file
    if check_file(pin, directory).state == "ok":
        return target
    switch = offline_switch()
    if switch:
        state = "not the pinned file" if target.exists() else "missing"
        raise DatasetError(f"dataset {name!r}: {target} is {state} and downloads are off ({switch}="
                           f"{os.environ[switch]}); {_remedy(name, pin)}")
    url = pin.url(download_base())
    new_folders = [p for p in reversed(target.parents) if not p.exists()]
    fetcher = pooch.create(path=directory, base_url=download_base(), registry={pin.file: f"sha256:{pin.sha256}"},
                           urls={pin.file: url}, retry_if_failed=retries)
    try:
        with _pooch_quiet():
            fetcher.fetch(pin.file, downloader=pooch.HTTPDownloader(progressbar=progress, timeout=DOWNLOAD_TIMEOUT))
    except (ValueError, OSError, requests.RequestException) as error:
        for folder in reversed(new_folders):  # the folders this attempt made, innermost first, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise DatasetError(f"dataset {name!r}: {_why(error, url, pin, target)}; nothing was kept; "
                           f"{_remedy(name, pin)}") from error
    return target


@contextlib.contextmanager
def _pooch_quiet() -> Iterator[None]:
    """pooch logs each download and retry on its own handler; melrl says what it does in its own words."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _why(error: BaseException, url: str, pin: PinnedFile, target: Path) -> str:
    import requests

    got = re.search(r"got ([0-9a-f]{64})", str(error))
    if isinstance(error, ValueError) and got:
        return f"the file at {url} has sha256 {got.group(1)}, not the pinned {pin.sha256}"
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"{url} answered HTTP {error.response.status_code} {error.response.reason}"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return f"the connection broke while downloading {url}"
    if isinstance(error, requests.Timeout):
        return (f"{url} did not answer in time ({DOWNLOAD_TIMEOUT[0]} s to connect, {DOWNLOAD_TIMEOUT[1]} s between "
                f"bytes)")
    if isinstance(error, requests.ConnectionError):
        return f"cannot reach {urlsplit(url).netloc} to download {url} ({_root_cause(error)})"
    if isinstance(error, OSError):
        return f"cannot write {target}: {error.strerror or error}"
    return f"cannot download {url}: {error}"


def _root_cause(error: BaseException) -> str:
    """The innermost reason of a connection error ("[Errno 111] Connection refused"), on one line."""
    errno = re.findall(r"\[Errno -?\d+\] [^'\")]+", str(error))
    return errno[-1].strip() if errno else " ".join(str(error).split())[:200]


# ---------------------------------------------------------------------------------------------------------------
# Whole datasets


def registered_files(names: Iterable[str] | None = None) -> list[tuple[str, str, PinnedFile]]:
    """(name, split, pinned file) of the named registered datasets (all of them by default), in registry order."""
    names = list(REGISTERED) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in names if n not in REGISTERED]
    if unknown:
        raise DatasetError(f"no registered dataset {', '.join(map(repr, unknown))}; registered: "
                           f"{', '.join(REGISTERED)}")
    return [(name, split, pin) for name in names for split, pin in REGISTERED[name].items()]


@dataclass(frozen=True)
class FileCheck:
    pin: PinnedFile
    path: Path
    state: str  # "ok", "missing" or "mismatch"
    size: int | None = None
    sha256: str | None = None


def check_file(pin: PinnedFile, directory: Path) -> FileCheck:
    """Whether `pin`'s file is in `directory` with its pinned size and sha256."""
    import pooch

    path = directory / pin.file
    if not path.is_file():
        return FileCheck(pin, path, "missing")
    size = path.stat().st_size
    sha256 = pooch.file_hash(str(path), alg="sha256")
    state = "ok" if (size, sha256) == (pin.size, pin.sha256) else "mismatch"
    return FileCheck(pin, path, state, size, sha256)


def verify_datasets(
    names: Iterable[str] | None = None, data_dir: str | os.PathLike | None = None
) -> list[tuple[str, str, FileCheck]]:
    """(name, split, check) of each file of the named registered datasets (all by default) in the data folder."""
    directory = resolve_data_dir(data_dir)
    return [(name, split, check_file(pin, directory)) for name, split, pin in registered_files(names)]


def download_datasets(names: Iterable[str] | None = None, data_dir: str | os.PathLike | None = None, *,
                      progress: bool = True) -> list[Path]:
    """Download the files of the named registered datasets (all by default) that the data folder lacks or holds
    with another checksum; returns every file's path."""
    directory = resolve_data_dir(data_dir)
    return [download_file(name, pin, directory, progress=progress) for name, _, pin in registered_files(names)]

"""The data folder, pinned downloads (against an HTTP server on 127.0.0.1 that serves files the tests make), offline
mode, `melrl data`, and the one-line errors every command gives before a model loads."""

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from melrl.cli import main
from melrl.data import REGISTERED, DatasetError, PinnedFile, download_datasets, load_records, verify_datasets
from melrl.data.files import check_file, download_file, ensure_file
from tests.helpers import REAL_DATA, free_port, needs_data


class FileServer:
    """Serves `files` (URL path -> bytes) on 127.0.0.1; a path in `drop` gets half its bytes, then the connection
    closes. `requests` records every path asked for."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.drop else body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, pin: PinnedFile, body: bytes) -> None:
        self.files["/" + pin.url("").lstrip("/")] = body

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    """The file server as the download mirror, downloads on."""
    srv = FileServer()
    monkeypatch.delenv("MELRL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("MELRL_DATA_MIRROR", srv.url)
    yield srv
    srv.close()


BODY = b'{"problem": "What is 2 + 3?", "answer": "5"}\n{"problem": "What is 4 + 4?", "answer": "8"}\n'


def pin_of(body: bytes, file: str = "mine/test.jsonl") -> PinnedFile:
    return PinnedFile(file, "org/repo", "0123456789abcdef0123456789abcdef01234567", "data/test.jsonl", len(body),
                      hashlib.sha256(body).hexdigest(), body.count(b"\n"), "MIT")


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- downloads -------------------------------------------------------------------------------------------------


def test_a_download_is_kept_when_its_sha256_matches_and_reused_without_a_request(server, tmp_path):
    pin = pin_of(BODY)
    server.serve(pin, BODY)
    path = download_file("mine", pin, tmp_path, progress=False)
    assert path == tmp_path / "mine" / "test.jsonl" and path.read_bytes() == BODY
    assert server.requests == ["/org/repo/0123456789abcdef0123456789abcdef01234567/data/test.jsonl"]
    assert files_in(tmp_path) == [path]  # no temporary file left
    assert download_file("mine", pin, tmp_path, progress=False) == path
    assert ensure_file("mine", pin, tmp_path) == path
    assert len(server.requests) == 1


def test_a_copy_with_another_checksum_is_replaced(server, tmp_path):
    pin = pin_of(BODY)
    server.serve(pin, BODY)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "test.jsonl").write_bytes(b"edited\n")
    assert check_file(pin, tmp_path).state == "mismatch"
    download_file("mine", pin, tmp_path, progress=False)
    assert check_file(pin, tmp_path).state == "ok" and len(server.requests) == 1


def test_a_checksum_mismatch_keeps_nothing(server, tmp_path):
    pin = pin_of(BODY)
    served = BODY.replace(b"5", b"6")
    server.serve(pin, served)
    with pytest.raises(DatasetError) as error:
        download_file("mine", pin, tmp_path, progress=False, retries=0)
    message = str(error.value)
    assert f"has sha256 {hashlib.sha256(served).hexdigest()}, not the pinned {pin.sha256}" in message
    assert "dataset 'mine'" in message and "nothing was kept" in message and "\n" not in message
    assert files_in(tmp_path) == [] and not (tmp_path / "mine").exists()


def test_a_connection_dropped_mid_file_keeps_nothing(server, tmp_path):
    pin = pin_of(BODY * 1000)
    server.serve(pin, BODY * 1000)
    server.drop = set(server.files)
    with pytest.raises(DatasetError, match="the connection broke while downloading http://127.0.0.1:.*was kept"):
        download_file("mine", pin, tmp_path, progress=False, retries=1)
    assert len(server.requests) == 2  # tried again once
    assert files_in(tmp_path) == []


def test_an_unreachable_server_gives_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.delenv("MELRL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("MELRL_DATA_MIRROR", f"http://127.0.0.1:{free_port()}/")
    pin = pin_of(BODY)
    with pytest.raises(DatasetError) as error:
        download_file("mine", pin, tmp_path, progress=False, retries=0)
    message = str(error.value)
    assert message.startswith("dataset 'mine': cannot reach 127.0.0.1:") and "Connection refused" in message
    assert "/org/repo/0123456789abcdef0123456789abcdef01234567/data/test.jsonl" in message  # no doubled slash
    assert "melrl data download mine" in message and "MELRL_DATA_DIR" in message and "\n" not in message
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("switch", ["MELRL_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode_turns_the_download_into_an_error(server, monkeypatch, tmp_path, switch):
    server.serve(REGISTERED["aime24"]["test"], b"never asked for")
    monkeypatch.setenv(switch, "1")
    with pytest.raises(DatasetError) as error:
        load_records("aime24", data_dir=tmp_path)
    message = str(error.value)
    assert f"{tmp_path / 'aime24' / 'test.jsonl'} is missing and downloads are off ({switch}=1)" in message
    assert "melrl data download aime24" in message
    assert server.requests == [] and files_in(tmp_path) == []


def test_a_mirror_with_the_wrong_file_fails_a_registered_dataset(server, tmp_path):
    pin = REGISTERED["amc23"]["test"]
    server.serve(pin, b'{"id": 0, "problem": "not AMC", "answer": 1}\n')
    with pytest.raises(DatasetError, match=f"dataset 'amc23': the file at {server.url}/{pin.repo}/{pin.commit}/"):
        load_records("amc23", data_dir=tmp_path)
    assert files_in(tmp_path) == []


@needs_data
def test_a_registered_dataset_downloads_once_with_a_notice_and_its_pinned_sha256(server, tmp_path, capsys):
    pin = REGISTERED["aime24"]["test"]
    server.serve(pin, (REAL_DATA / pin.file).read_bytes())
    records = load_records("aime24", data_dir=tmp_path)
    notice = capsys.readouterr().err.strip().splitlines()[0]
    assert notice == (f"melrl: dataset 'aime24' is not in {tmp_path}: downloading aime24/test.jsonl (156.9 kB) from "
                      f"{server.url}/{pin.repo}/{pin.commit}/{pin.path}")
    assert len(records) == 30 and hashlib.sha256((tmp_path / pin.file).read_bytes()).hexdigest() == pin.sha256
    assert load_records("aime24", data_dir=tmp_path) == records and len(server.requests) == 1


@needs_data
def test_every_registered_file_matches_its_pin():
    checks = verify_datasets(data_dir=REAL_DATA)
    assert [(name, split) for name, split, _ in checks] == [(n, s) for n, files in REGISTERED.items() for s in files]
    assert {check.state for _, _, check in checks} == {"ok"}
    for _, _, check in checks:
        pin = check.pin
        assert len(pin.commit) == 40 and len(pin.sha256) == 64 and pin.licence
        rows = (pq.ParquetFile(check.path).metadata.num_rows if pin.file.endswith(".parquet")
                else sum(1 for line in check.path.read_text().splitlines() if line.strip()))
        assert rows == pin.rows


def test_download_datasets_fetches_only_what_is_named(server, tmp_path):
    pin = REGISTERED["aime25"]["test"]
    with pytest.raises(DatasetError, match="no registered dataset 'nope'"):
        download_datasets(["aime25", "nope"], tmp_path)
    assert server.requests == []
    with pytest.raises(DatasetError, match="HTTP 404"):
        download_datasets(["aime25"], tmp_path, progress=False)
    assert server.requests == [f"/{pin.repo}/{pin.commit}/{pin.path}"] * 3  # pooch retries twice


# --- the command line ----------------------------------------------------------------------------------------


def test_data_list_shows_every_dataset_with_its_source_and_checksum(capsys, tmp_path):
    assert main(["data", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name, files in REGISTERED.items():
        for split, pin in files.items():
            assert f"{name} [{split}]  {pin.rows:,} rows  not downloaded" in out
            assert pin.source in out and pin.sha256 in out and pin.licence in out
    assert "repaired as it loads: id 18, the `\\f` of `\\frac` became a form feed" in out


def test_data_verify_reports_a_file_that_differs(tmp_path, capsys):
    pin = REGISTERED["amc23"]["test"]
    edited = b'{"id": 0}\n'
    (tmp_path / "amc23").mkdir()
    (tmp_path / "amc23" / "test.jsonl").write_bytes(edited)
    assert main(["data", "verify", "amc23", "aime24", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"amc23/test.jsonl: DIFFERS: sha256 {hashlib.sha256(edited).hexdigest()} (10 bytes)" in out
    assert f"pinned {pin.sha256}" in out and "aime24/test.jsonl: missing" in out


@needs_data
def test_data_download_then_verify(server, tmp_path, capsys):
    for name in ("aime24", "amc23"):
        pin = REGISTERED[name]["test"]
        server.serve(pin, (REAL_DATA / pin.file).read_bytes())
    assert main(["data", "download", "aime24", "amc23", "--dir", str(tmp_path), "--no-progress"]) == 0
    assert main(["data", "download", "aime24", "--dir", str(tmp_path)]) == 0
    assert main(["data", "verify", "aime24", "amc23", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "aime24/test.jsonl: downloaded, sha256 matches" in out and "aime24/test.jsonl: present" in out
    assert "amc23/test.jsonl: ok" in out and len(server.requests) == 2


def test_data_download_failure_is_one_line_with_exit_code_2(server, tmp_path, capsys):
    assert main(["data", "download", "gsm8k", "--dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("melrl data: error: dataset 'gsm8k': ")
    assert "HTTP 404" in err and files_in(tmp_path) == []


def write_train_config(tmp_path, **values) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model_name_or_path": "/no/such/model", "use_cpu": True, "bf16": False,
                                    "output_dir": str(tmp_path / "run"), **values}))
    return str(path)


@pytest.mark.parametrize("command", [
    ["eval", "--model", "/no/such/model", "--benchmarks", "aime24"],
    ["solve", "--model", "/no/such/model", "--dataset", "aime24"],
    ["train", "--config", "{config}"],
])
def test_a_missing_dataset_stops_a_command_before_its_model_with_one_line(command, tmp_path, capsys):
    empty = tmp_path / "empty"
    config = write_train_config(tmp_path, dataset_name="aime24", data_dir=str(empty))
    argv = [a.replace("{config}", config) for a in command]
    if argv[0] != "train":
        argv += ["--data-dir", str(empty)]
    assert main(argv) == 2  # a model load would fail otherwise: there is no /no/such/model
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"melrl {argv[0]}: error: dataset '")
    assert "aime24" in err and "downloads are off (MELRL_OFFLINE=1)" in err and "melrl data download" in err
    with pytest.raises(DatasetError):
        main(["--debug", *argv])


def test_validation_benchmarks_are_checked_before_training(tmp_path, capsys):
    config = write_train_config(tmp_path, dataset_name="arith", validation_steps=1,
                                validation_benchmarks=["gsm8k"], data_dir=str(tmp_path / "empty"))
    assert main(["train", "--config", config]) == 2
    assert "dataset 'gsm8k': " + str(tmp_path / "empty" / "gsm8k" / "test.jsonl") in capsys.readouterr().err


@pytest.mark.parametrize("values, match", [
    ({"dataset_nam": "gsm8k"}, "unknown key(s) 'dataset_nam' (did you mean 'dataset_name'?)"),
    ({"validation_steps": 5}, "validation_steps is set but validation_benchmarks is empty"),
])
def test_a_configuration_error_is_one_line_with_exit_code_2(values, match, tmp_path, capsys):
    assert main(["train", "--config", write_train_config(tmp_path, **values)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("melrl train: error: ") and match in err


def test_an_eval_setting_error_is_one_line(tmp_path, capsys):
    assert main(["eval", "--model", "/no/such/model", "--template", "nope", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("melrl eval: error: unknown template 'nope'")


def test_the_command_exits_2_without_a_traceback(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "MELRL_DATA_MIRROR"}, "MELRL_DATA_DIR": str(tmp_path),
           "MELRL_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "melrl", "eval", "--model", "smollm2-135m-instruct",
                             "--benchmarks", "aime24"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"melrl eval: error: dataset 'aime24': {tmp_path / 'aime24' / 'test.jsonl'} is missing and downloads are off "
        f"(MELRL_OFFLINE=1); run `melrl data download aime24` where raw.githubusercontent.com is reachable, set "
        f"MELRL_DATA_MIRROR to a mirror, or set MELRL_DATA_DIR to a folder that holds aime24/test.jsonl"]


def test_local_files_keep_loading_without_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MELRL_DATA_DIR", str(tmp_path / "nowhere"))
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"problem": "p", "answer": "1"}) + "\n")
    assert [r.answer for r in load_records(path)] == ["1"]
    assert not (tmp_path / "nowhere").exists()

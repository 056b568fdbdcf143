"""The malloc `melrl train` and `melrl demo` run under: the choice, the preload and the re-execution."""

import os
import subprocess
import sys

import pytest

from melrl.allocator import ENV, jemalloc_library, jemalloc_loaded, library_to_preload, preload_environment

LIBRARY = "libjemalloc.so.2"
CPU_LINUX = dict(platform="linux", library=LIBRARY, gpu=False, loaded=False)


def test_auto_preloads_jemalloc_on_a_cpu_linux_host():
    assert library_to_preload({}, **CPU_LINUX) == LIBRARY
    assert library_to_preload({ENV: " Auto "}, **CPU_LINUX) == LIBRARY


@pytest.mark.parametrize("environ, host", [
    ({ENV: "system"}, {}),
    ({}, {"gpu": True}),
    ({}, {"platform": "darwin"}),
    ({}, {"loaded": True}),
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, {}),
])
def test_auto_keeps_malloc(environ, host):
    assert library_to_preload(environ, **CPU_LINUX | host) is None


def test_auto_without_the_library_keeps_malloc(monkeypatch):
    monkeypatch.setattr("melrl.allocator.jemalloc_library", lambda: None)
    assert library_to_preload({}, platform="linux", gpu=False, loaded=False) is None


def test_jemalloc_is_forced_on_a_gpu_host():
    assert library_to_preload({ENV: "jemalloc"}, **CPU_LINUX | {"gpu": True}) == LIBRARY


def test_jemalloc_asked_for_but_missing_is_an_error(monkeypatch):
    monkeypatch.setattr("melrl.allocator.jemalloc_library", lambda: None)
    with pytest.raises(ValueError, match="apt install libjemalloc2"):
        library_to_preload({ENV: "jemalloc"}, platform="linux", gpu=False, loaded=False)
    with pytest.raises(ValueError, match="Linux only"):
        library_to_preload({ENV: "jemalloc"}, **CPU_LINUX | {"platform": "darwin"})


def test_unknown_choice_names_the_variable():
    with pytest.raises(ValueError, match=f"{ENV}='tcmalloc'"):
        library_to_preload({ENV: "tcmalloc"}, **CPU_LINUX)


def test_preload_goes_ahead_of_what_is_preloaded():
    assert preload_environment({"A": "1"}, LIBRARY) == {"A": "1", "LD_PRELOAD": LIBRARY}
    assert preload_environment({"LD_PRELOAD": "libx.so"}, LIBRARY)["LD_PRELOAD"] == f"{LIBRARY} libx.so"


def test_loaded_reads_the_memory_map(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert not jemalloc_loaded(maps)
    maps.write_text(maps.read_text() + "7f02-7f03 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert jemalloc_loaded(maps)
    assert not jemalloc_loaded(tmp_path / "missing")


def test_bad_choice_stops_the_command_with_a_message():
    result = subprocess.run([sys.executable, "-m", "melrl", "train", "--help"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, ENV: "bogus"})
    assert result.returncode == 2
    assert f"{ENV}='bogus'" in result.stderr


needs_jemalloc = pytest.mark.skipif(sys.platform != "linux" or jemalloc_library() is None,
                                    reason="no jemalloc library on this host")


@needs_jemalloc
def test_preloaded_process_runs_under_jemalloc():
    code = "from melrl.allocator import jemalloc_loaded; print(jemalloc_loaded())"
    environ = preload_environment({k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}, jemalloc_library())
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=environ)
    assert result.stdout.strip() == "True", result.stderr


@needs_jemalloc
def test_train_command_reexecutes_itself_once():
    environ = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {ENV: "jemalloc"}
    result = subprocess.run([sys.executable, "-m", "melrl", "train", "--help"], capture_output=True, text=True,
                            timeout=120, env=environ)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("running under jemalloc") == 1
    assert "usage" in result.stdout.lower()

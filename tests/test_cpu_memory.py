"""Releasing freed memory between generation and the update on CPU (`melrl.cpu_memory`)."""

import pytest

import melrl.cpu_memory as cpu_memory
from melrl.trainer import MELTrainer
from tests.test_trainer import make_trainer


@pytest.mark.skipif(cpu_memory._glibc() is None, reason="needs glibc")
def test_phases_set_the_allocator_under_glibc(monkeypatch):
    calls = []
    libc = cpu_memory._glibc()
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: FakeLibc(libc, calls))
    assert cpu_memory.update_phase() and cpu_memory.generation_phase()
    assert calls == [("malloc_trim", 0), ("mallopt", cpu_memory.M_MMAP_THRESHOLD, cpu_memory.UPDATE_MMAP_THRESHOLD),
                     ("mallopt", cpu_memory.M_MMAP_THRESHOLD, cpu_memory.GENERATION_MMAP_THRESHOLD)]


def test_phases_do_nothing_without_glibc(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    assert not cpu_memory.update_phase() and not cpu_memory.generation_phase()


def test_glibc_is_left_alone_under_jemalloc(monkeypatch):
    monkeypatch.setattr(cpu_memory, "jemalloc_loaded", lambda: True)
    cpu_memory._glibc.cache_clear()
    try:
        assert cpu_memory._glibc() is None
    finally:
        cpu_memory._glibc.cache_clear()


class FakeLibc:
    """Records the calls and passes them on to the real C library."""

    def __init__(self, libc, calls):
        self.libc, self.calls = libc, calls

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return self.libc.malloc_trim(pad)

    def mallopt(self, parameter, value):
        self.calls.append(("mallopt", parameter, value))
        return self.libc.mallopt(parameter, value)


@pytest.mark.parametrize("enabled", [True, False])
def test_trainer_brackets_each_generation_when_enabled(tiny_model_dir, tmp_path, monkeypatch, enabled):
    events = []
    monkeypatch.setattr(cpu_memory, "generation_phase", lambda: events.append("generation") or True)
    monkeypatch.setattr(cpu_memory, "update_phase", lambda: events.append("update") or True)

    def failing(self, inputs):
        events.append("generate")
        raise RuntimeError("generation failed")

    monkeypatch.setattr(MELTrainer, "_generate_score_and_analyse", failing)
    trainer = make_trainer(tiny_model_dir, tmp_path, cpu_memory_release=enabled)
    trainer.model.train()
    with pytest.raises(RuntimeError, match="generation failed"):
        trainer._generate_and_score_completions([])
    assert events == (["generation", "generate", "update"] if enabled else ["generate"])

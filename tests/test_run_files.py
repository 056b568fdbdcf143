"""`melrl.training.run_files`: phase times read once the device has run what was queued on it."""

import time
from collections import defaultdict
from types import SimpleNamespace

import torch

from melrl.training.run_files import RunFilesCallback, StepStats


def test_a_phase_time_includes_waiting_for_the_device():
    waits = []

    def slow_device():  # a device that takes 50 ms to finish what a phase queued
        waits.append(time.perf_counter())
        time.sleep(0.05)

    stats = StepStats(slow_device)
    with stats.timed("nll"):
        pass
    assert len(waits) == 2  # at the start and at the end of the phase
    assert 0.05 <= stats.time["nll"] < 0.5


def test_run_files_synchronise_a_cuda_device_and_not_the_cpu(tmp_path, monkeypatch):
    synchronised = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(device))
    for device in (torch.device("cpu"), torch.device("cuda", 0)):
        accelerator = SimpleNamespace(device=device, is_main_process=False)
        callback = RunFilesCallback(tmp_path, accelerator, defaultdict(list))
        with callback.stats.timed("rollout"):
            pass
        callback.on_step_begin(None, None, None)
        if device.type == "cpu":
            assert synchronised == []
    assert len(synchronised) == 4 and set(synchronised) == {torch.device("cuda", 0)}  # start, phase x 2, step

"""A finished run tears its process group down itself, rather than leaving gloo's threads to the interpreter's exit
(where they can abort a process whose run succeeded)."""

from types import SimpleNamespace

import torch.distributed as dist
from accelerate import Accelerator

import melrl.cli.train as train_module
from melrl.cli.train import RunArguments, end_processes, run_training
from tests.helpers import free_port
from tests.test_trainer import make_config


def test_end_processes_destroys_the_process_group():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        end_processes(SimpleNamespace(accelerator=Accelerator(cpu=True)))
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_run_training_ends_its_processes_after_the_model_is_saved(tmp_path, monkeypatch):
    calls = []

    class RecordingTrainer:
        accelerator = SimpleNamespace(wait_for_everyone=lambda: calls.append("wait"),
                                      end_training=lambda: calls.append("end"))

        def train(self, resume_from_checkpoint=None):
            calls.append("train")

        def save_model(self, output_dir):
            calls.append("save")

    monkeypatch.setattr(train_module, "build_trainer", lambda run, config, callbacks=None: RecordingTrainer())
    run_training(RunArguments(), make_config(tmp_path))
    assert calls == ["train", "save", "wait", "end"]

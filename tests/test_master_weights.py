"""`melrl train`: half-precision weights are trained only where an engine keeps fp32 master weights."""

from types import SimpleNamespace

import pytest
import yaml
from accelerate.utils import DistributedType

from melrl.cli import preset_path
from melrl.cli.train import RunArguments, check_master_weights
from melrl.training.config import MELConfig

PAPER_PRESETS = sorted(p.name for p in preset_path("demo.yaml").parent.glob("qwen3_*.yaml"))


def launched_under(engine: DistributedType, bf16: bool = True, continuous_batching: bool = False):
    """What `check_master_weights` reads of a config made under `accelerate launch` with a kit of `engine`."""
    return SimpleNamespace(distributed_state=SimpleNamespace(distributed_type=engine), bf16=bf16, fp16=False,
                           use_transformers_continuous_batching=continuous_batching)


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_train_bf16_weights_only_with_master_weights(name):
    values = yaml.safe_load(preset_path(name).read_text())
    run = RunArguments(dtype=values["dtype"], use_peft=values.get("use_peft", False))
    assert run.dtype == "bfloat16" and values["bf16"]
    check_master_weights(run, launched_under(DistributedType.DEEPSPEED))  # the presets' kit: ZeRO-3
    check_master_weights(run, launched_under(DistributedType.FSDP))
    with pytest.raises(ValueError, match=r"dtype: bfloat16 under DDP \(MULTI_GPU\) trains bfloat16 weights with no "
                                         r"fp32 master copy.*Use dtype: float32 with bf16: true"):
        check_master_weights(run, launched_under(DistributedType.MULTI_GPU))


def test_fp32_weights_and_lora_train_anywhere_fsdp_needs_mixed_precision():
    check_master_weights(RunArguments(dtype="float32"), launched_under(DistributedType.MULTI_GPU))
    check_master_weights(RunArguments(dtype="bfloat16", use_peft=True), launched_under(DistributedType.MULTI_GPU))
    with pytest.raises(ValueError, match="under FSDP without bf16: true"):
        check_master_weights(RunArguments(dtype="bfloat16"), launched_under(DistributedType.FSDP, bf16=False))


def test_fp32_weights_under_autocast_refuse_trls_continuous_batching_without_master_weights():
    # TRL's continuous-batching branch casts the policy to bf16 in place when bf16 is set
    fp32 = RunArguments(dtype="float32")
    refused = r"use_transformers_continuous_batching with bf16/fp16 under DDP \(MULTI_GPU\)"
    with pytest.raises(ValueError, match=refused):
        check_master_weights(fp32, launched_under(DistributedType.MULTI_GPU, continuous_batching=True))
    check_master_weights(fp32, launched_under(DistributedType.MULTI_GPU, bf16=False, continuous_batching=True))
    check_master_weights(fp32, launched_under(DistributedType.DEEPSPEED, continuous_batching=True))


def test_train_refuses_bf16_weights_on_one_process_before_loading_anything(tmp_path, monkeypatch):
    import melrl.cli.train as train_module

    def must_not_run(*args, **kwargs):
        raise AssertionError("loaded before the precision check")

    monkeypatch.setattr(train_module, "load_run_records", must_not_run)
    monkeypatch.setattr(train_module, "load_model_and_tokenizer", must_not_run)
    config = MELConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="dtype: float16 on one process trains float16 weights"):
        train_module.build_trainer(RunArguments(dtype="float16"), config)

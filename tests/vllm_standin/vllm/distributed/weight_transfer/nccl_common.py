"""vLLM's NCCL weight transfer, which TRL's server mode uses to push weights: not part of the CPU stand-in."""


def trainer_init(init_info: dict):
    raise NotImplementedError("NCCL weight transfer (vLLM server mode) is not part of the CPU stand-in")

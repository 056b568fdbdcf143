"""vLLM's packed NCCL broadcast, which TRL's server mode uses to push weights: not part of the CPU stand-in."""


def packed_nccl_broadcast_producer(*args, **kwargs):
    raise NotImplementedError("NCCL weight transfer (vLLM server mode) is not part of the CPU stand-in")

"""`melrl.training.agreement`: a decision made on the main process reaches every process, and so does its error."""

import os

import torch.multiprocessing as mp

from tests.helpers import free_port


def decide_on_two_processes(rank: int, port: int, results) -> None:
    from accelerate import PartialState

    from melrl.training.agreement import decided_on_main

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    state = PartialState(cpu=True)  # gloo
    outcome = [decided_on_main(state, lambda: [f"verdicts of process {rank}"])]

    def fail():
        raise TimeoutError("the verifier ran out of time")

    try:
        decided_on_main(state, fail)
    except Exception as e:
        outcome.append(f"{type(e).__name__}: {e}")
    results[rank] = outcome


def test_every_process_gets_the_main_process_decision_or_its_error():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(decide_on_two_processes, args=(free_port(), results), nprocs=2)
        first, second = results[0], results[1]
    assert first[0] == second[0] == ["verdicts of process 0"]
    assert first[1] == "TimeoutError: the verifier ran out of time"  # the main process raises its own error
    assert second[1] == "RuntimeError: the main process failed to decide: TimeoutError: the verifier ran out of time"

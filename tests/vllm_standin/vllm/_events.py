"""What the stand-in was asked to do, one JSON line per event, when `VLLM_STANDIN_EVENTS` names a folder (one file
per process, so that the processes of a distributed run never write to the same file)."""

import json
import os
from pathlib import Path


def record(event: str, **fields) -> None:
    folder = os.environ.get("VLLM_STANDIN_EVENTS")
    if not folder:
        return
    line = {"event": event, "pid": os.getpid(), "rank": int(os.environ.get("RANK", "0")), **fields}
    with open(Path(folder) / f"events-{os.getpid()}.jsonl", "a") as out:
        out.write(json.dumps(line) + "\n")


def read(folder) -> list[dict]:
    """Every event recorded under `folder`, process by process in the order each wrote them."""
    return [json.loads(line) for path in sorted(Path(folder).glob("events-*.jsonl"))
            for line in path.read_text().splitlines()]

"""The internalization NLL of k meta-experiences: one row each against packs that share their context's prefix.

    .venv/bin/python benchmarks/nll_packing.py                 # embedded SmolLM2-135M, 1 to 8 meta-experiences
    .venv/bin/python benchmarks/nll_packing.py --model PATH --counts 2,4 --repeats 1

Every analysis context begins with the same instruction (`melrl/nll_packing.py`). The script builds analysis
prompts as `benchmarks/shared_prefix.py` does (the model's own solutions to `arith` problems), gives each a
meta-experience of `--target-tokens` tokens, and times the NLL's forward and backward pass with activation
checkpointing, as the trainer runs it, for k = `--counts` meta-experiences: one row each (what the trainer does
with `nll_packing: false`), and packed into one row (`--max-tokens` per pack). It checks that both give the same
NLL. Each way runs `--repeats` times, alternating; the median counts. Saves
`benchmarks/results/nll_packing.{json,png}`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from results_file import plot_two_ways, save_results
from shared_prefix import analysis_prompts
from timed_model import load_timed_model

ROOT = Path(__file__).resolve().parents[1]
ROWS, PACKED = "one row each", "packed"


def nll_seconds(model, contexts: list[list[int]], targets: list[list[int]], packed: bool, max_tokens: int):
    """(seconds, per-meta-experience NLL) of one forward and backward pass over all meta-experiences."""
    import torch

    from melrl.algorithms import sequence_mean_nll
    from melrl.nll_packing import pack, packed_attention, packed_batch, packed_nll

    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    if packed:
        # the packs of one micro-step, as the trainer lays them out
        batch = packed_batch(pack(contexts, targets, max_tokens), "cpu")
        with packed_attention(model):
            nll = packed_nll(model, batch)
            nll.sum().backward()
        nlls = nll.tolist()
    else:
        nlls = []
        for context, target in zip(contexts, targets):
            ids = torch.tensor([context + target])
            logits = model(input_ids=ids, logits_to_keep=len(target) + 1, use_cache=False).logits[:, :-1]
            nll = sequence_mean_nll(logits, torch.tensor([target]), torch.ones(1, len(target)))
            nll.sum().backward()
            nlls += nll.tolist()
    return time.perf_counter() - start, nlls


def plot(results: dict, path: Path) -> None:
    plot_two_ways(results, path, (ROWS, PACKED), "seconds", list(results["calls"]), "seconds, forward + backward",
                  xlabel="meta-experiences")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--counts", default="1,2,4,8")
    parser.add_argument("--target-tokens", type=int, default=192)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "nll_packing.json"))
    args = parser.parse_args()

    import torch

    from melrl.nll_packing import pack

    model, tokenizer, threads = load_timed_model(args.model)
    contexts = analysis_prompts(model, tokenizer)
    generator = torch.Generator().manual_seed(0)
    targets = [torch.randint(100, 20000, (args.target_tokens,), generator=generator).tolist() for _ in contexts]
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    results = {"model": args.model, "threads": threads, "target_tokens": args.target_tokens,
               "max_tokens": args.max_tokens, "calls": {}}
    same = True
    for count in map(int, args.counts.split(",")):
        call = (contexts[:count], targets[:count])
        nll_seconds(model, *call, packed=True, max_tokens=args.max_tokens)  # warm-up
        times = {ROWS: [], PACKED: []}
        nlls = {}
        for _ in range(args.repeats):
            for way in (ROWS, PACKED):
                seconds, nlls[way] = nll_seconds(model, *call, packed=way == PACKED, max_tokens=args.max_tokens)
                times[way].append(seconds)
        difference = max(abs(a - b) for a, b in zip(nlls[ROWS], nlls[PACKED]))
        same &= difference < 1e-4
        processed = {ROWS: sum(len(c) + len(t) for c, t in zip(*call))}
        processed[PACKED] = sum(p.length for p in pack(*call, args.max_tokens))
        timings = {way: {"seconds": statistics.median(times[way]), "tokens": processed[way]} for way in times}
        timings["nll_max_difference"] = difference
        results["calls"][str(count)] = timings
        print(f"{count} meta-experiences: {timings[ROWS]['seconds']:.2f} s one row each ({processed[ROWS]} tokens), "
              f"{timings[PACKED]['seconds']:.2f} s packed ({processed[PACKED]} tokens), "
              f"NLL difference {difference:.1e}", flush=True)
    save_results(results, args.output, plot)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

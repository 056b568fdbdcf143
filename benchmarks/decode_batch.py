"""Cost of one decode step against the number of sequences decoded together, plainly and weight-major.

    .venv/bin/python benchmarks/decode_batch.py                 # embedded SmolLM2-135M
    .venv/bin/python benchmarks/decode_batch.py --model PATH --batches 1,2,4,8,16
    .venv/bin/python benchmarks/decode_batch.py --dtype bfloat16 --batches 1,2,4,16 \
        --output benchmarks/results/decode_batch_dtypes_bfloat16.json

A decode step reads every weight once whatever the batch, so while the batch is small its time hardly grows
with the batch and tokens per second grow in proportion to it. Rollouts decode G x prompts sequences at once;
the analysis and replay phases decode one sequence per pair, typically a handful. On top of that, on some CPUs MKL
computes `F.linear` slowly for a few rows; where timing shows the weight-major product faster, the trainer and the
evaluation use it instead (`melrl/cpu_decoding.py`).

The script times sampled decode steps of random prompts at a rollout-like context (50 tokens) and an
analysis-like one (700 tokens) for each batch size, plainly and with `fast_cpu_decoding` (median of
`--repeats`; the weight-major column always multiplies weight-major), and the output layer alone for 1 to
`MAX_ROWS` rows both ways, with the order the trainer picks on this host. `--dtype` loads the weights in another
dtype (weight-major decoding serves float32 weights only, so both columns then decode alike). Saves
`benchmarks/results/decode_batch.{json,png}`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from results_file import save_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def decode_step_seconds(model, batch: int, context: int, new_tokens: int, new_cache=None) -> float:
    """Seconds per decode step: a full generation minus its prefill, over the decode steps. `new_cache()`, if
    given, makes the cache each generation starts from."""
    import torch

    ids = torch.randint(100, 1000, (batch, context))
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.7,
                  top_k=0, pad_token_id=0)

    def seconds(tokens: int) -> float:
        cache = {} if new_cache is None else {"past_key_values": new_cache()}
        start = time.perf_counter()
        model.generate(**kwargs, **cache, max_new_tokens=tokens, min_new_tokens=tokens)
        return time.perf_counter() - start

    with torch.no_grad():
        prefill = seconds(1)
        total = seconds(new_tokens)
    return max(total - prefill, 1e-9) / (new_tokens - 1)


def output_layer_ms(linear, weight, rows: int, repeats: int = 15) -> float:
    """Milliseconds for `rows` hidden states times the output layer with `linear(x, weight, bias)`."""
    import torch

    x = torch.randn(rows, weight.size(1), dtype=weight.dtype)
    with torch.no_grad():
        linear(x, weight, None)
        start = time.perf_counter()
        for _ in range(repeats):
            linear(x, weight, None)
    return 1000 * (time.perf_counter() - start) / repeats


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for context, modes in results["contexts"].items():
        for mode, style in (("plain", "--"), ("weight-major", "-")):
            rows = modes[mode]
            left.plot([r["batch"] for r in rows], [r["ms_per_step"] for r in rows], style, marker="o",
                      label=f"context {context}, {mode}")
    left.set(xlabel="sequences decoded together", ylabel="ms per decode step", title="one decode step")
    left.set_xscale("log", base=2)
    layer = results["output_layer"]
    for mode, style in (("plain", "--"), ("weight-major", "-")):
        right.plot([r["rows"] for r in layer], [r[mode] for r in layer], style, marker="o", label=mode)
    right.set(xlabel="rows", ylabel="ms", title="output layer (vocabulary x hidden)")
    right.set_xscale("log", base=2)
    for ax in (left, right):
        ax.legend(fontsize=7)
    fig.suptitle(f"{results['model']} ({results.get('dtype', 'float32')}), {results['threads']} threads, "
                 f"{results.get('cpu_capability', '?')} CPU",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batches", default="1,2,3,4,6,8,16")
    parser.add_argument("--contexts", default="50,700")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--output", default=str(RESULTS / "decode_batch.json"))
    args = parser.parse_args()

    import statistics

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from melrl.cpu_decoding import MAX_ROWS, cpu_name, fast_cpu_decoding, weight_major_pays, weight_major_product
    from melrl.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(args.model, dtype=args.dtype)
    model.eval()
    decode_step_seconds(model, 1, 8, 4)  # warm-up
    results = {"model": args.model, "dtype": args.dtype, "threads": torch.get_num_threads(), "cpu": cpu_name(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "contexts": {}, "output_layer": []}
    for context in map(int, args.contexts.split(",")):
        modes = {"plain": [], "weight-major": []}
        for batch in map(int, args.batches.split(",")):
            for mode in modes:
                with fast_cpu_decoding(model, sequences=batch, enabled=mode == "weight-major", measure=False):
                    seconds = statistics.median(decode_step_seconds(model, batch, context, args.new_tokens)
                                                for _ in range(args.repeats))
                modes[mode].append({"batch": batch, "ms_per_step": 1000 * seconds,
                                    "tokens_per_second": batch / seconds})
            plain, fast = (modes[m][-1]["ms_per_step"] for m in modes)
            print(f"context {context:4d}  batch {batch:3d}: {plain:6.1f} ms/step plain, {fast:6.1f} weight-major",
                  flush=True)
        results["contexts"][str(context)] = modes
    weight = model.get_output_embeddings().weight.detach()
    for rows in range(1, MAX_ROWS + 1):
        plain = output_layer_ms(torch.nn.functional.linear, weight, rows)
        fast = output_layer_ms(weight_major_product, weight, rows)
        serves = weight.dtype == torch.float32  # fast_cpu_decoding leaves other dtypes to F.linear
        chosen = "weight-major" if serves and weight_major_pays(weight, rows) else "plain"
        results["output_layer"].append({"rows": rows, "plain": plain, "weight-major": fast, "trainer_uses": chosen})
        print(f"output layer, {rows:2d} rows: {plain:5.1f} ms plain, {fast:5.1f} ms weight-major; "
              f"the trainer uses {chosen}", flush=True)
    save_results(results, args.output, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

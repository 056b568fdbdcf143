"""Evaluation metrics as pure functions: the unbiased pass@k estimator and per-benchmark aggregates.

A problem's record holds a `greedy` completion (or None) and a list of sampled `samples`, each with a boolean
`correct`. Metrics are fractions in [0, 1]; reports print them as percentages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the (huge) binomial coefficients.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n < 1 or k < 1:
        raise ValueError(f"need n >= 1 and k >= 1, got n={n}, k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def benchmark_metrics(records: Sequence[Mapping], k: int, greedy: bool) -> dict[str, float]:
    """Pass@1 (greedy verdict), Avg@k (mean of c/n) and, for k > 1, Pass@k (mean unbiased estimate)."""
    if not records:
        raise ValueError("no problems to aggregate")
    metrics: dict[str, float] = {}
    if greedy:
        metrics["pass@1"] = _mean(bool(r["greedy"]["correct"]) for r in records)
    if k:
        counts = [(len(r["samples"]), sum(bool(s["correct"]) for s in r["samples"])) for r in records]
        metrics[f"avg@{k}"] = _mean(c / n for n, c in counts)
        if k > 1:  # sampled pass@1 is avg@1, and its key would clash with the greedy pass@1
            metrics[f"pass@{k}"] = _mean(pass_at_k(n, c, k) for n, c in counts)
    return metrics


def average_metrics(per_benchmark: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Unweighted mean over benchmarks of each metric they all have (the paper's "Average" column)."""
    tables = list(per_benchmark.values())
    if not tables:
        return {}
    shared = [name for name in tables[0] if all(name in t for t in tables)]
    return {name: _mean(t[name] for t in tables) for name in shared}


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)

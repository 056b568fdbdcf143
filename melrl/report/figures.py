"""The report's figures, drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot, no display).

Each builder returns a `Figure` record: the PNG bytes, or `png=None` and a note saying why there is no data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from melrl.report.run_data import COUNTERS, PHASES, Run

DPI = 110
MANY_STEPS = 60  # beyond this, bars per step become lines / areas
PHASE_COLORS = {
    "rollout": "#4c72b0", "scoring": "#8172b3", "analysis": "#dd8452", "replay": "#55a868",
    "update": "#937860", "nll": "#c44e52",
}
COUNTER_COLORS = {"pairs": "#8c8c8c", "constructed": "#4c72b0", "parsed": "#dd8452", "leaked": "#c44e52",
                  "kept": "#55a868"}


@dataclass
class Figure:
    name: str  # file stem and element id: reward, validation, retention, counters, time
    title: str
    alt: str
    png: bytes | None = None
    note: str | None = None  # why the figure is missing, or a remark under it


def run_colors(runs: list[Run]) -> dict[str, str]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {run.label: _hex(palette[i % len(palette)]) for i, run in enumerate(runs)}


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb[:3])


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)


def _marker(n: int) -> str | None:
    return "o" if n <= MANY_STEPS else None


def reward_figure(runs: list[Run], colors: dict[str, str]) -> Figure:
    with_data = [r for r in runs if r.series("reward_mean")[0]]
    fig_info = Figure("reward", "Training reward", "")
    if not with_data:
        fig_info.note = "No training reward (reward_mean in metrics.jsonl) in any run: figure omitted."
        return fig_info
    mixed = any(r.series("mixed_group_fraction")[0] for r in with_data)
    fig = _new_figure(9, 5.2 if mixed else 3.6)
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1]) if mixed else [fig.subplots()]
    for run in with_data:
        xs, ys = run.series("reward_mean")
        axes[0].plot(xs, ys, marker=_marker(len(xs)), color=colors[run.label], label=run.label)
        if mixed:
            xs, ys = run.series("mixed_group_fraction")
            axes[1].plot(xs, ys, marker=_marker(len(xs)), color=colors[run.label], label=run.label)
    axes[0].set_ylabel("mean reward")
    axes[0].set_title("Training reward vs step")
    axes[0].legend(loc="best", fontsize="small")
    if mixed:
        axes[1].set_ylabel("mixed groups")
        axes[1].set_ylim(-0.05, 1.05)
    for ax in axes:
        _integer_steps(ax)
    if mixed:
        axes[0].set_xlabel("")
    fig_info.png = _png(fig)
    fig_info.alt = "Training reward (mean rollout reward) vs step for " + ", ".join(r.label for r in with_data) + (
        "; below, the fraction of prompts with both correct and incorrect rollouts" if mixed else "")
    return fig_info


def validation_figure(runs: list[Run], colors: dict[str, str]) -> Figure:
    fig_info = Figure("validation", "Validation accuracy", "")
    benchmarks: list[str] = []
    for run in runs:
        for bench in run.benchmarks():
            if bench not in benchmarks:
                benchmarks.append(bench)
    if not benchmarks:
        fig_info.note = ("No validation metrics (eval/{benchmark}/pass@1 lines in metrics.jsonl) in any run: "
                         "figure omitted.")
        return fig_info
    benchmarks.sort(key=lambda b: (b == "average", b))  # the average last
    cols = min(3, len(benchmarks))
    rows = -(-len(benchmarks) // cols)
    fig = _new_figure(4.2 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    styles = ["-", "--", ":", "-."]
    for ax, bench in zip(axes, benchmarks):
        for run in runs:
            metrics = run.benchmarks().get(bench, {})
            names = sorted(metrics, key=lambda m: (m != "pass@1", m))
            for k, metric in enumerate(names):
                points = metrics[metric]
                label = run.label if len(names) == 1 else f"{run.label} {metric}"
                ax.plot([p[0] for p in points], [p[1] for p in points], styles[k % len(styles)],
                        marker=_marker(len(points)), color=colors[run.label], label=label)
        ax.set_title(bench)
        ax.set_ylabel("pass@1" if all(m == "pass@1" for r in runs for m in r.benchmarks().get(bench, {}))
                      else "accuracy")
        _integer_steps(ax)
        ax.legend(loc="best", fontsize="x-small")
    for ax in axes[len(benchmarks):]:
        ax.set_visible(False)
    fig.suptitle("Validation accuracy vs step")
    fig_info.png = _png(fig)
    fig_info.alt = "Validation accuracy vs step, one panel per benchmark (" + ", ".join(benchmarks) + ")"
    return fig_info


def retention_figure(runs: list[Run], colors: dict[str, str]) -> Figure:
    fig_info = Figure("retention", "Retention ratio", "")
    with_data = [r for r in runs if r.is_mel and r.series("retention_ratio")[0]]
    if not with_data:
        fig_info.note = "No run constructed meta-experiences (GRPO runs only?): retention figure omitted."
        return fig_info
    fig = _new_figure(9, 3.6)
    ax = fig.subplots()
    for run in with_data:
        xs, ys = run.series("retention_ratio")
        ax.plot(xs, ys, marker=_marker(len(xs)), color=colors[run.label], label=f"{run.label} (per step)")
        cumulative, kept, constructed = [], 0, 0
        for m in run.train:
            kept += int(m.get("kept") or 0)
            constructed += int(m.get("constructed") or 0)
            cumulative.append(kept / constructed if constructed else 0.0)
        ax.plot(run.steps(), cumulative, "--", color=colors[run.label], alpha=0.6, label=f"{run.label} (cumulative)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("kept / constructed")
    ax.set_title("Retention ratio vs step")
    ax.legend(loc="best", fontsize="small")
    _integer_steps(ax)
    fig_info.png = _png(fig)
    fig_info.alt = "Retention ratio (kept / constructed meta-experiences) vs step, per step and cumulative, for " + \
        ", ".join(r.label for r in with_data)
    skipped = [r.label for r in runs if r.has_metrics and r not in with_data]
    if skipped:
        fig_info.note = "Not shown (no meta-experiences): " + ", ".join(skipped) + "."
    return fig_info


def counters_figure(runs: list[Run], colors: dict[str, str]) -> Figure:
    fig_info = Figure("counters", "MEL counters", "")
    with_data = [r for r in runs if r.is_mel and r.train]
    if not with_data:
        fig_info.note = "No run constructed meta-experiences: counters figure omitted."
        return fig_info
    fig = _new_figure(9, 2.9 * len(with_data) + 0.4)
    axes = fig.subplots(len(with_data), 1, squeeze=False).ravel()
    width = 0.8 / len(COUNTERS)
    for ax, run in zip(axes, with_data):
        steps = run.steps()
        for k, counter in enumerate(COUNTERS):
            values = [int(m.get(counter) or 0) for m in run.train]
            if len(steps) <= MANY_STEPS:
                ax.bar([s + (k - (len(COUNTERS) - 1) / 2) * width for s in steps], values, width,
                       color=COUNTER_COLORS[counter], label=counter)
            else:
                ax.plot(steps, values, color=COUNTER_COLORS[counter], label=counter, linewidth=1)
        ax.set_title(f"{run.label}: meta-experiences per step")
        ax.set_ylabel("count")
        ax.legend(loc="upper left", fontsize="x-small", ncol=len(COUNTERS))
        _integer_steps(ax)
        ax.margins(y=0.2)
    fig_info.png = _png(fig)
    fig_info.alt = ("MEL counters per step (pairs, constructed, parsed, leaked, kept), one panel per run: "
                    + ", ".join(r.label for r in with_data))
    return fig_info


def time_figure(runs: list[Run], colors: dict[str, str]) -> Figure:
    fig_info = Figure("time", "Time per phase", "")
    with_data = [r for r in runs if any(f"time_{p}" in m for m in r.train for p in PHASES)]
    if not with_data:
        fig_info.note = "No timings (time_* in metrics.jsonl) in any run: figure omitted."
        return fig_info
    fig = _new_figure(9, 2.9 * len(with_data) + 0.4)
    axes = fig.subplots(len(with_data), 1, squeeze=False).ravel()
    for ax, run in zip(axes, with_data):
        steps = run.steps()
        layers = {}
        for phase in PHASES:
            layers[phase] = [float(m.get(f"time_{phase}") or 0.0) for m in run.train]
        nll = [float(m.get("time_nll") or 0.0) for m in run.train]
        if any(nll):  # time_nll is the NLL share of time_update: show the two parts
            layers["update"] = [max(u - n, 0.0) for u, n in zip(layers["update"], nll)]
            layers["nll"] = nll
        shown = {k: v for k, v in layers.items() if any(v)}
        labels = {"update": "update (policy)" if "nll" in shown else "update", "nll": "update (NLL)"}
        if len(steps) <= MANY_STEPS:
            bottom = [0.0] * len(steps)
            for phase, values in shown.items():
                ax.bar(steps, values, 0.7, bottom=bottom, color=PHASE_COLORS[phase], label=labels.get(phase, phase))
                bottom = [b + v for b, v in zip(bottom, values)]
        else:
            ax.stackplot(steps, *shown.values(), colors=[PHASE_COLORS[p] for p in shown],
                         labels=[labels.get(p, p) for p in shown])
        ax.set_title(f"{run.label}: seconds per phase and step")
        ax.set_ylabel("seconds")
        ax.legend(loc="upper left", fontsize="x-small", ncol=len(shown))
        ax.margins(y=0.25)
        _integer_steps(ax)
    fig_info.png = _png(fig)
    fig_info.alt = "Seconds per phase (rollout, scoring, analysis, replay, update) stacked per step, one panel " \
        "per run: " + ", ".join(r.label for r in with_data)
    return fig_info


def all_figures(runs: list[Run]) -> list[Figure]:
    colors = run_colors(runs)
    return [builder(runs, colors) for builder in
            (reward_figure, validation_figure, retention_figure, counters_figure, time_figure)]

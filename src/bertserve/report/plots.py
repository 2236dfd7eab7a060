"""The report's figures as PNG bytes: latency against throughput, the latency breakdown per
point, and cost per million inferences. matplotlib is imported only when a figure is drawn."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from bertserve.perf.results import BREAKDOWN_FIELDS
from bertserve.report.analysis import Analysis, DeploymentSummary

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["breakdown_png", "cost_png", "latency_throughput_png"]

_LOG_RANGE = 20.0  # an axis spanning more than this factor goes logarithmic
_COMPONENT_COLORS = ("#4e79a7", "#a0cbe8", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f")


def latency_throughput_png(analysis: Analysis) -> bytes:
    """One line per deployment: `stat` latency against throughput, best point starred."""
    fig = _figure(10.5, 6.2)
    ax = fig.add_subplot()
    colors = _colors(len(analysis.summaries))
    xs_all: list[float] = []
    ys_all: list[float] = []
    for color, summary in zip(colors, analysis.summaries, strict=True):
        points = summary.deployment.run.measurements
        xs = [m.throughput for m in points]
        ys = [m.latency_us(analysis.stat) / 1000.0 for m in points]
        xs_all += xs
        ys_all += ys
        ax.plot(xs, ys, "o-", color=color, lw=1.6, ms=4, label=_legend_label(summary))
        if summary.best is not None:
            ax.plot(
                summary.best.throughput,
                summary.best.latency_us(analysis.stat) / 1000.0,
                "*",
                color=color,
                ms=16,
                mec="black",
                mew=0.8,
                zorder=5,
            )
        for m, x, y in ((points[0], xs[0], ys[0]), (points[-1], xs[-1], ys[-1])):
            ax.annotate(
                _load_text(m.load, m.mode),
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=color,
            )
    if analysis.budget_ms is not None:
        ax.axhline(analysis.budget_ms, color="crimson", ls="--", lw=1.2)
        ax.annotate(
            f"budget {analysis.budget_ms:g} ms",
            (0.01, analysis.budget_ms),
            xycoords=("axes fraction", "data"),
            ha="left",
            va="bottom",
            fontsize=8,
            color="crimson",
        )
    _scale(ax, "x", xs_all)
    _scale(ax, "y", ys_all + ([analysis.budget_ms] if analysis.budget_ms else []))
    ax.set_xlabel("throughput (inferences/s)")
    ax.set_ylabel(f"{analysis.stat} latency per request (ms)")
    ax.set_title(
        f"{analysis.stat} latency vs throughput (star: best point at {analysis.budget_text})",
        fontsize=10,
    )
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    return _png(fig)


def breakdown_png(analysis: Analysis) -> bytes:
    """Per deployment, stacked average latency components at each point, `stat` marked."""
    summaries = analysis.summaries
    ncols = 1 if len(summaries) == 1 else 2
    nrows = math.ceil(len(summaries) / ncols)
    fig = _figure(12.0, 1.0 + 3.0 * nrows, layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(summaries))]
    for ax, summary in zip(axes, summaries, strict=True):
        points = summary.deployment.run.measurements
        positions = list(range(len(points)))
        bottoms = [0.0] * len(points)
        for color, (name, title) in zip(_COMPONENT_COLORS, BREAKDOWN_FIELDS, strict=True):
            heights = [float(getattr(m, name)) / 1000.0 for m in points]
            ax.bar(positions, heights, bottom=bottoms, color=color, width=0.75, label=title)
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        tails = [m.latency_us(analysis.stat) / 1000.0 for m in points]
        ax.plot(positions, tails, "k_", ms=14, mew=2, label=f"{analysis.stat} latency")
        ax.set_xticks(positions, [f"{m.load:g}" for m in points], fontsize=8)
        pad = max(6 - len(points), 0) / 2  # a lone point keeps a normal bar width
        ax.set_xlim(-0.6 - pad, len(points) - 0.4 + pad)
        ax.set_xlabel("concurrency" if points[0].mode == "concurrency" else "request rate (req/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(_legend_label(summary), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside upper center",
        ncol=4,
        fontsize=8,
        frameon=False,
        title="Average latency per request, stacked by component; black tick = "
        f"{analysis.stat} latency",
        title_fontsize=10,
    )
    return _png(fig)


def cost_png(analysis: Analysis) -> bytes | None:
    """Dollars per million inferences at each deployment's best point; None if none costed."""
    costed = [(s, s.best_cost) for s in analysis.summaries if s.best_cost is not None]
    if not costed:
        return None
    costed.sort(key=lambda sc: -float(sc[1] or 0))
    fig = _figure(10.5, 1.4 + 0.5 * len(costed))
    ax = fig.add_subplot()
    labels = [_legend_label(s) for s, _ in costed]
    values = [float(c or 0) for _, c in costed]
    ax.barh(range(len(values)), values, color="#4e79a7")
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    for i, v in enumerate(values):
        ax.annotate(f" ${v:,.3g}", (v, i), va="center", fontsize=8)
    _scale(ax, "x", values)
    ax.set_xlim(right=max(values) * (4 if ax.get_xscale() == "log" else 1.2))
    ax.set_xlabel("US dollars per million inferences (on-demand price, best point)")
    ax.set_title(f"Cost per million inferences ({analysis.budget_text})", fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.25)
    fig.tight_layout()
    return _png(fig)


def _figure(width: float, height: float, layout: Literal["constrained"] | None = None) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout=layout)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _scale(ax: Axes, axis: str, values: Sequence[float]) -> None:
    """Log scale when the values span more than _LOG_RANGE, with plain-number tick labels."""
    from matplotlib.ticker import FuncFormatter

    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > _LOG_RANGE:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,g}"))


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _legend_label(summary: DeploymentSummary) -> str:
    d = summary.deployment
    machine = d.machine.id if d.machine is not None else "machine not given"
    return f"{d.label} ({machine})"


def _load_text(load: float, mode: str) -> str:
    return f"c={load:g}" if mode == "concurrency" else f"{load:g} req/s"

"""From runs and prices to what a report says: each deployment's best point under a latency
budget, its cost per million inferences, and how the deployments compare."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bertserve.cost.catalog import Catalog, Machine
from bertserve.cost.model import CostComparison, best_point, compare_costs, cost_per_million
from bertserve.perf.results import Measurement, Run

__all__ = ["Analysis", "Deployment", "DeploymentSummary", "analyze"]


@dataclass(frozen=True)
class Deployment:
    """A run, where it was read from, and the machine that served it (None: not costed)."""

    run: Run
    source: str
    machine: Machine | None

    @property
    def label(self) -> str:
        return self.run.label

    def cost(self, point: Measurement) -> float | None:
        if self.machine is None:
            return None
        return cost_per_million(self.machine.price_per_hour, point.throughput)


@dataclass(frozen=True)
class DeploymentSummary:
    deployment: Deployment
    best: Measurement | None
    """Highest throughput within the budget; None when no point meets it."""

    @property
    def best_cost(self) -> float | None:
        return None if self.best is None else self.deployment.cost(self.best)


@dataclass(frozen=True)
class Analysis:
    stat: str
    """The latency statistic judged: "avg", "p50", "p90", "p95" or "p99"."""
    budget_ms: float | None
    summaries: tuple[DeploymentSummary, ...]
    comparisons: tuple[CostComparison, ...]
    """Each costed deployment against the cheapest, cheapest-first."""
    notes: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    """What a reader must not miss, such as results measured with random weights."""

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        return tuple(s.deployment for s in self.summaries)

    @property
    def budget_text(self) -> str:
        if self.budget_ms is None:
            return "no latency budget"
        return f"{self.stat} latency <= {self.budget_ms:g} ms"


def analyze(
    runs: Sequence[tuple[Run, str]],
    catalog: Catalog,
    *,
    stat: str = "p99",
    budget_ms: float | None = None,
) -> Analysis:
    """Runs with their source descriptions; machines are looked up in `catalog`."""
    notes: list[str] = []
    warnings: list[str] = []
    summaries = []
    for run, source in runs:
        machine = catalog[run.machine] if run.machine else None
        deployment = Deployment(run=run, source=source, machine=machine)
        summaries.append(
            DeploymentSummary(
                deployment=deployment,
                best=best_point(run.measurements, stat=stat, budget_ms=budget_ms),
            )
        )
        if machine is None:
            notes.append(f"{run.label}: no machine given, so no cost (tag it with machine=ID).")
        behind = [m.load for m in run.measurements if (m.dropped_sends or m.delayed_sends)]
        if behind:
            notes.append(
                f"{run.label}: the client sent late or dropped sends at request rate(s) "
                f"{', '.join(f'{x:g}' for x in behind)}; the offered rate was not fully met."
            )
        errored = sum(1 for m in run.measurements if m.errors)
        if errored:
            notes.append(f"{run.label}: {errored} point(s) had request errors and are never best.")
    random = [run.label for run, _ in runs if run.random_weights]
    if random:
        warnings.append(
            f"Measured with RANDOM WEIGHTS: {', '.join(random)}. Speed and cost are real; the "
            "answers are meaningless."
        )
    for s in summaries:
        if s.best is None:
            notes.append(f"{s.deployment.label}: no point meets {_budget(stat, budget_ms)}.")
    costed = [(s.deployment.label, s.best_cost) for s in summaries if s.best_cost is not None]
    comparisons: list[CostComparison] = []
    if len(costed) >= 2:
        cheapest_label, cheapest_cost = min(costed, key=lambda lc: lc[1])
        comparisons = [
            compare_costs(cheapest_label, cheapest_cost, label, cost)
            for label, cost in sorted(costed, key=lambda lc: lc[1])
            if label != cheapest_label
        ]
    return Analysis(
        stat=stat,
        budget_ms=budget_ms,
        summaries=tuple(summaries),
        comparisons=tuple(comparisons),
        notes=tuple(notes),
        warnings=tuple(warnings),
    )


def _budget(stat: str, budget_ms: float | None) -> str:
    return "any budget" if budget_ms is None else f"{stat} latency <= {budget_ms:g} ms"

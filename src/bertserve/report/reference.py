"""The reference benchmark shipped as package data: its seven perf_analyzer CSVs, what the
README says about them, and the README's headline table recomputed from the CSVs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

from bertserve.cost.catalog import Catalog
from bertserve.cost.model import CostComparison, budget_interval, compare_costs, cost_per_million
from bertserve.perf.results import LATENCY_STATS, Measurement, Run, read_perf_analyzer_csv

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "HeadlineRow",
    "ReferenceBenchmark",
    "ReferenceDeployment",
    "headline_rows",
    "load_reference",
    "reference_verdicts",
]

_DATA = resources.files("bertserve") / "data" / "reference"


@dataclass(frozen=True)
class ReferenceDeployment:
    id: str
    file: str
    label: str
    model: str
    machine: str | None
    headline_latency_ms: float | None
    headline_qps: float | None
    notes: str
    run: Run


@dataclass(frozen=True)
class ReferenceBenchmark:
    title: str
    period: str
    command: str
    setup: str
    verdict: str
    baseline: str
    contender: str
    deployments: tuple[ReferenceDeployment, ...]

    def deployment(self, deployment_id: str) -> ReferenceDeployment:
        return next(d for d in self.deployments if d.id == deployment_id)


@dataclass(frozen=True)
class HeadlineRow:
    """One README table row next to the CSV point it was read from."""

    deployment: ReferenceDeployment
    point: Measurement
    price_per_hour: float
    closest_stat: str
    """The latency statistic at `point` nearest the README's latency."""
    budget_p99_ms: tuple[float, float] | None
    """p99 budgets [low, high) in ms under which the best-point rule picks `point`."""

    @property
    def cost_csv(self) -> float:
        return cost_per_million(self.price_per_hour, self.point.throughput)

    @property
    def cost_readme(self) -> float:
        assert self.deployment.headline_qps is not None
        return cost_per_million(self.price_per_hour, self.deployment.headline_qps)


def load_reference() -> ReferenceBenchmark:
    meta: dict[str, Any] = tomllib.loads((_DATA / "benchmark.toml").read_text(encoding="utf-8"))
    batch = int(meta["batch_size"])
    deployments = []
    for entry in meta["deployment"]:
        with resources.as_file(_DATA / entry["file"]) as path:
            points = read_perf_analyzer_csv(path, batch_size=batch)
        run = Run(
            label=entry["label"],
            model=entry["id"],
            model_version="1",
            protocol=meta["protocol"],
            machine=entry.get("machine"),
            batch_size=batch,
            seq_len=int(entry.get("seq_len", meta["seq_len"])),
            tool=meta["tool"],
            notes=entry.get("notes", ""),
            date=meta["period"],
            measurements=tuple(points),
        )
        deployments.append(
            ReferenceDeployment(
                id=entry["id"],
                file=entry["file"],
                label=entry["label"],
                model=entry["model"],
                machine=entry.get("machine"),
                headline_latency_ms=entry.get("headline_latency_ms"),
                headline_qps=entry.get("headline_qps"),
                notes=entry.get("notes", ""),
                run=run,
            )
        )
    return ReferenceBenchmark(
        title=meta["title"],
        period=meta["period"],
        command=meta["command"],
        setup=meta["setup"],
        verdict=meta["verdict"],
        baseline=meta["baseline"],
        contender=meta["contender"],
        deployments=tuple(deployments),
    )


def headline_rows(bench: ReferenceBenchmark, catalog: Catalog) -> list[HeadlineRow]:
    """The README's table, each row matched to its CSV point: the point whose throughput is
    nearest the README's qps (the README rounds), ties going to the lowest p99 latency."""
    rows = []
    for d in bench.deployments:
        if d.headline_qps is None or d.headline_latency_ms is None or d.machine is None:
            continue
        qps, latency_us = d.headline_qps, d.headline_latency_ms * 1000.0
        points = d.run.measurements
        nearest = min(abs(m.throughput - qps) for m in points)
        candidates = [m for m in points if abs(m.throughput - qps) <= nearest + 1e-9]
        point = min(candidates, key=lambda m: m.latency_us("p99"))
        closest = min(LATENCY_STATS, key=lambda s: abs(point.latency_us(s) - latency_us))
        rows.append(
            HeadlineRow(
                deployment=d,
                point=point,
                price_per_hour=catalog[d.machine].price_per_hour,
                closest_stat=closest,
                budget_p99_ms=budget_interval(points, point, stat="p99"),
            )
        )
    return rows


def reference_verdicts(
    bench: ReferenceBenchmark, rows: list[HeadlineRow]
) -> tuple[CostComparison, CostComparison]:
    """The README's verdict, from the CSV points and from the README's rounded qps."""
    by_id = {r.deployment.id: r for r in rows}
    base, cont = by_id[bench.baseline], by_id[bench.contender]
    label_b, label_c = _long_label(base), _long_label(cont)
    from_csv = compare_costs(label_b, base.cost_csv, label_c, cont.cost_csv)
    from_readme = compare_costs(label_b, base.cost_readme, label_c, cont.cost_readme)
    return from_csv, from_readme


def _long_label(row: HeadlineRow) -> str:
    return f"{row.deployment.label} on {row.deployment.machine}"

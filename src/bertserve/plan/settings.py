"""What `bertserve plan` is told: one typed object, its flags mapping onto these fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bertserve.perf.settings import PerfSettings

__all__ = ["PERCENTILES", "PlanSettings"]

#: Latency percentiles a budget can judge (those every measured point reports).
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)


@dataclass(frozen=True)
class PlanSettings:
    #: How each point is measured: server, protocol, model, `-b`, windows, stability, input
    #: data; its load (concurrency) is set by the search.
    perf: PerfSettings
    #: Latency budget in ms at `percentile`; None: no budget (highest throughput wins).
    budget_ms: float | None = None
    percentile: int = 99
    #: Price-catalog ids of machines the served hardware can be rented as; the cheapest
    #: prices the plan. Empty: this machine's catalog entry is guessed.
    machines: tuple[str, ...] = ()
    #: Catalog files merged over the shipped one.
    catalogs: tuple[str, ...] = ()
    #: Target load in inferences/s for the capacity plan; None: no capacity plan.
    qps: float | None = None
    #: Share of a replica's capacity planned to be used (the rest is headroom).
    utilization: float = 0.7
    output: Path = Path("bertserve-plan")
    #: No new candidate starts after this many measured points, or minutes.
    max_measurements: int = 100
    max_minutes: float | None = None
    max_concurrency: int = 256
    #: Largest max_batch_size and instance count tried.
    max_batch_size: int = 128
    max_instances: int = 8
    #: Smallest relative difference that counts as a gain.
    noise_floor: float = 0.01
    #: Search the model's variants (siblings, GPU precisions) too.
    variants: bool = True

    @property
    def model(self) -> str:
        return self.perf.model

    @property
    def stat(self) -> str:
        return f"p{self.percentile}"

    @property
    def budget_us(self) -> float:
        return float("inf") if self.budget_ms is None else self.budget_ms * 1000.0

    def check(self) -> None:
        """Raise ValueError naming the flag when a setting cannot work."""
        if self.percentile not in PERCENTILES:
            choices = ", ".join(map(str, PERCENTILES))
            raise ValueError(f"--percentile {self.percentile}: choose one of {choices}")
        if not 0 < self.utilization <= 1:
            raise ValueError(
                f"--utilization {self.utilization:g}: a share of a replica's capacity, in (0, 1]"
            )
        if self.qps is not None and self.qps <= 0:
            raise ValueError(f"--qps {self.qps:g}: the target load must be above 0")
        if self.max_batch_size < self.perf.batch_size:
            raise ValueError(
                f"--max-batch-size {self.max_batch_size} is below -b {self.perf.batch_size}: "
                "no batch could take a request"
            )
        if self.output.exists() and not self.output.is_dir():
            raise ValueError(f"--output {self.output}: exists and is not a directory")

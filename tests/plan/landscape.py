"""A planted landscape: a bench whose candidates perform as a small closed-loop queueing
model says, so that the search can be checked against the exhaustive answer.

Per instance, a batch of b inferences takes (a + k b) / t^0.8 ms with t threads (threads
help sub-linearly; threads x instances beyond the vCPUs slow everything down). With c
requests in flight over n instances, each instance holds q = c / n of them: batches of
min(q, max_batch_size), ceil(q / max_batch_size) batches per round, and a batch that cannot
fill waits the queue delay (3 % less with preferred sizes, the halves). Latency L = rounds
x batch time + that wait, reported as queue time; throughput c / L (Little's law); the
99th percentile is 1.25 times the time past the queue, plus the wait. Each variant scales
a and k. A deterministic +-0.5 % wobble per measurement stands in for noise.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from bertserve.perf.results import Measurement
from bertserve.plan.capacity_search import CandidateFailed, Point
from bertserve.plan.knobs import Candidate, Knobs, Variant

__all__ = ["Landscape"]


@dataclass
class Landscape:
    vcpus: int = 4
    a_ms: float = 4.0
    k_ms: float = 1.0
    #: Per variant name: factor on a and k.
    speed: dict[str, float] = field(default_factory=lambda: {"fp32": 1.0, "int8": 0.55})
    #: Candidates whose load fails (by instances at or above this count).
    fail_instances: int | None = None
    wobble: float = 0.005
    #: False: a batch that cannot fill leaves at once (a backend with native batch sizes).
    waits: bool = True
    loaded: Candidate | None = None
    prepared: list[Candidate] = field(default_factory=list)
    measured: list[tuple[Candidate, int]] = field(default_factory=list)

    def latency_ms(self, variant: Variant, knobs: Knobs, concurrency: int) -> float:
        factor = self.speed.get(variant.name, 1.0)
        threads = knobs.threads or max(1, self.vcpus // knobs.instances)
        used = threads * knobs.instances
        slowdown = max(1.0, used / self.vcpus)
        batch_cap = max(knobs.max_batch_size, 1)
        per_instance = concurrency / knobs.instances
        batch = min(max(per_instance, 1.0), batch_cap)
        rounds = math.ceil(per_instance / batch_cap) if per_instance > batch_cap else 1
        batch_ms = factor * (self.a_ms + self.k_ms * batch) / threads**0.8 * slowdown
        return rounds * batch_ms + self.wait_ms(knobs, concurrency)

    def wait_ms(self, knobs: Knobs, concurrency: int) -> float:
        """Time in the queue: batches ahead, and the delay a batch that cannot fill waits."""
        factor_wait = 0.0
        per_instance = concurrency / knobs.instances
        if self.waits and per_instance < max(knobs.max_batch_size, 1) and knobs.max_batch_size > 1:
            factor_wait = knobs.queue_delay_us / 1000
            if knobs.preferred:
                factor_wait *= 0.97
        return factor_wait

    def point(self, candidate: Candidate, concurrency: int, wobble: float = 0.0) -> Measurement:
        latency = self.latency_ms(candidate.variant, candidate.knobs, concurrency)
        wait = self.wait_ms(candidate.knobs, concurrency)
        latency *= 1 + wobble
        compute = latency - wait
        throughput = concurrency / latency * 1000
        return Measurement(
            concurrency=concurrency,
            throughput=throughput,
            latency_avg_us=latency * 1000,
            latency_p50_us=latency * 1000,
            latency_p90_us=(1.1 * compute + wait) * 1000,
            latency_p95_us=(1.15 * compute + wait) * 1000,
            latency_p99_us=(1.25 * compute + wait) * 1000,
            server_queue_us=wait * 1000,
        )

    # the Bench protocol

    def prepare(self, candidate: Candidate) -> None:
        self.prepared.append(candidate)
        if self.fail_instances is not None and candidate.knobs.instances >= self.fail_instances:
            raise CandidateFailed(f"{candidate.knobs.instances} instances: out of memory")
        self.loaded = candidate

    def measure(self, candidate: Candidate, concurrency: int) -> Point:
        assert candidate == self.loaded, "measured a candidate that is not loaded"
        self.measured.append((candidate, concurrency))
        digest = hashlib.sha256(f"{candidate}{concurrency}{len(self.measured)}".encode()).digest()
        wobble = (digest[0] / 255 - 0.5) * 2 * self.wobble
        return Point(self.point(candidate, concurrency, wobble))

    def best_exhaustive(
        self, candidates: list[Candidate], budget_ms: float, max_concurrency: int
    ) -> tuple[float, Candidate, int]:
        """The highest throughput within budget over every candidate and concurrency."""
        best = (0.0, candidates[0], 0)
        for candidate in candidates:
            for c in range(1, max_concurrency + 1):
                m = self.point(candidate, c)
                if m.latency_p99_us <= budget_ms * 1000 and m.throughput > best[0]:
                    best = (m.throughput, candidate, c)
        return best

"""The plan on the terminal: a line per candidate and per measured point as the search goes,
then the winner, the capacity plan and the files written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from bertserve.cost.model import cost_per_million
from bertserve.plan.capacity_search import Outcome, Point
from bertserve.plan.knobs import Candidate
from bertserve.plan.search import SearchEvents

if TYPE_CHECKING:
    from bertserve.plan.outputs import PlanFiles
    from bertserve.plan.session import PlanResult

__all__ = ["PlanDisplay", "print_summary"]


class PlanDisplay:
    def __init__(self, console: Console, stat: str) -> None:
        self.console = console
        self.stat = stat
        self.count = 0

    def events(self) -> SearchEvents:
        return SearchEvents(
            on_candidate=self.candidate, on_point=self.point, on_outcome=self.outcome
        )

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def candidate(self, candidate: Candidate, via: str) -> None:
        self.say(f"{candidate.label}  [{via}]")

    def point(self, candidate: Candidate, point: Point) -> None:
        self.count += 1
        m = point.measurement
        stable = "" if m.extras.get("stable", 1.0) else "  (not stable)"
        errors = f"  {m.errors} errors" if m.errors else ""
        self.say(
            f"    #{self.count:<3} concurrency {m.load:>4g}: {m.throughput:10.1f} inferences/s  "
            f"{self.stat} {m.latency_us(self.stat) / 1000:8.2f} ms{errors}{stable}"
        )

    def outcome(self, outcome: Outcome) -> None:
        if outcome.status == "pruned":
            self.say(f"{outcome.candidate.label}  [{outcome.via}]\n    pruned: {outcome.reason}")
            return
        if outcome.status == "measured":
            best = outcome.best
            if best is None:
                self.say("    -> nothing within budget")
            else:
                self.say(
                    f"    -> {best.throughput:.1f} inferences/s at concurrency {best.load:g} "
                    "within budget"
                )
            return
        self.say(f"    -> {outcome.status}: {outcome.reason}")


def print_summary(result: PlanResult, files: PlanFiles, console: Console) -> None:
    """The answer, in a few lines, and where the files are."""
    s = result.settings
    search = result.search
    stat = s.stat
    budget = "no latency budget" if s.budget_ms is None else f"{stat} <= {s.budget_ms:g} ms"

    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    say("")
    if result.guess is not None:
        say(
            f"{result.guess.sentence()} (The planner's machine is taken for the server's; "
            "give --machine when the server runs elsewhere.)"
        )
    say(
        f"{search.measurements} points measured, {len(search.measured)} candidates; stopped "
        f"because {search.stopped}. Noise: {search.noise.text()}."
    )
    winner = search.winner
    if winner is None or winner.best is None:
        say(f"No configuration of {s.model} met {budget}.")
    else:
        best = winner.best
        machine = result.machine
        cost = cost_per_million(machine.price_per_hour, best.throughput)
        say(
            f"Cheapest at {budget}: {winner.candidate.label}: {best.throughput:.1f} "
            f"inferences/s at concurrency {best.load:g}, {stat} "
            f"{best.latency_us(stat) / 1000:.1f} ms; ${cost:.4g} per million inferences on "
            f"{machine.id} (${machine.price_per_hour:.4g}/hour)."
        )
        seed = search.seed.best
        if seed is not None and winner is not search.seed:
            say(
                f"The config loaded before gave {seed.throughput:.1f} inferences/s within the "
                f"budget: the winner costs 1/{best.throughput / seed.throughput:.2f} as much "
                "per inference."
            )
    fleet = result.fleet
    if fleet is not None:
        say(
            f"Fleet for {fleet.qps:g} inferences/s: {fleet.replicas} x {fleet.machine.id} at "
            f"{fleet.utilization:.0%} of capacity ({fleet.headroom:.0%} headroom), "
            f"${fleet.dollars_per_hour:.4g}/hour, ${fleet.dollars_per_month:,.0f}/month; "
            f"autoscale on queue time {fleet.autoscaler_target_us} us."
        )
    for problem in result.restore_problems:
        say(f"NOT RESTORED: {problem}")
    if not result.restore_problems:
        say("Every model the plan loaded was put back as it was found.")
    written = [p for p in (files.config, files.values, files.plan) if p.exists()]
    if files.report is not None:
        written.append(files.report.files.html)
    say("Wrote " + ", ".join(str(p) for p in written) + ".")

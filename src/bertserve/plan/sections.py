"""The plan's own part of the report: the winner and its cost on each machine offered, the
capacity plan, the Pareto front (table and figure), and every candidate the search decided,
with why; the shared report pipeline adds the per-candidate tables and figures after it."""

from __future__ import annotations

import io
from collections.abc import Sequence

from bertserve.cost.model import cost_per_million
from bertserve.plan.capacity_search import Outcome
from bertserve.plan.pareto import FrontPoint, pareto_front
from bertserve.plan.session import PlanResult
from bertserve.report import formatting as fmt
from bertserve.report.document import Block, Bullets, Figure, Heading, Paragraph, Table

__all__ = ["plan_sections"]


def plan_sections(result: PlanResult) -> list[Block]:
    s = result.settings
    search = result.search
    stat = s.stat
    budget = "no latency budget" if s.budget_ms is None else f"{stat} <= {s.budget_ms:g} ms"
    blocks: list[Block] = [Heading(2, f"Plan for {s.model} at {budget}")]
    winner = search.winner
    if winner is None or winner.best is None:
        blocks.append(
            Paragraph(
                f"No configuration met {budget}: every candidate's {stat} latency stayed over "
                "it, even with one request in flight. A larger budget, a faster variant or "
                "faster hardware is needed.",
                emphasis=True,
            )
        )
    else:
        best = winner.best
        blocks.append(
            Paragraph(
                f"Winner: {winner.candidate.label}, {fmt.rate(best.throughput)} inferences/s "
                f"at concurrency {best.load:g}, {stat} {fmt.ms(best.latency_us(stat))} ms. "
                f"The seed (the config loaded when the plan started) gave "
                f"{_seed_text(search.seed, stat)}."
            )
        )
        blocks.append(_machines_table(result, best.throughput))
    blocks.append(Bullets(tuple(_search_facts(result))))
    if result.fleet is not None:
        blocks += _fleet_blocks(result)
    front = pareto_front(search.measured, stat)
    if front:
        blocks += [
            Heading(3, "Pareto front: throughput against latency (and cost)"),
            _front_table(front, result),
            Figure(
                "pareto_front.png",
                _front_png(search.measured, front, result),
                f"Every measured point, {stat} latency against throughput; the line joins the "
                "points no other beats on both (the Pareto front); the star is the winner. On "
                "one machine cost per million inferences falls as throughput rises, so the "
                "same points are the front of cost against latency.",
            ),
        ]
    blocks += [Heading(3, "Every candidate, in the order decided"), _candidates_table(result)]
    return blocks


def _seed_text(seed: Outcome, stat: str) -> str:
    if seed.best is None:
        return "nothing within budget"
    m = seed.best
    return f"{fmt.rate(m.throughput)} inferences/s, {stat} {fmt.ms(m.latency_us(stat))} ms"


def _machines_table(result: PlanResult, throughput: float) -> Table:
    rows = tuple(
        (
            m.id,
            m.name,
            fmt.dollars(m.price_per_hour),
            fmt.dollars(cost_per_million(m.price_per_hour, throughput)),
        )
        for m in result.machines
    )
    return Table(
        headers=("machine", "name", "$/hour", "$ per million inferences (winner)"),
        rows=rows,
        numeric=(False, False, True, True),
    )


def _search_facts(result: PlanResult) -> list[str]:
    search = result.search
    measured = [o for o in search.outcomes if o.points]
    pruned = [o for o in search.outcomes if o.status == "pruned"]
    facts = [
        f"{search.measurements} points measured over {len(measured)} candidates; "
        f"{len(pruned)} more pruned unmeasured; the ladders hold "
        f"{result.space.size() * len(result.variants)} configurations "
        f"({len(result.variants)} variant(s) x {result.space.size()}).",
        f"Noise: {search.noise.text()}. A gain under the noise is no gain.",
        f"Stopped because {search.stopped}.",
        "Variants: " + ", ".join(v.text() for v in result.variants) + ".",
    ]
    if search.confirmation is not None and search.winner and search.winner.best:
        again = search.confirmation.measurement.throughput
        first = search.winner.best.throughput
        facts.append(
            f"The winner's point measured once more at the end: {fmt.rate(again)} "
            f"inferences/s ({(again - first) / first:+.1%} against the search's)."
        )
        stat = result.settings.stat
        latency = search.confirmation.measurement.latency_us(stat)
        if latency > result.settings.budget_us:
            facts.append(
                f"NOT CONFIRMED: measured again, the winner's {stat} was {fmt.ms(latency)} ms, "
                f"over the budget: it sits at the budget's edge on this machine. Serve it at "
                "a lower concurrency than the plan's, or plan again when the machine is quiet."
            )
    if result.restore_problems:
        facts += [f"NOT RESTORED: {p}" for p in result.restore_problems]
    else:
        facts.append("Every model the plan loaded was put back as it was found.")
    return facts + result.notes


def _fleet_blocks(result: PlanResult) -> list[Block]:
    fleet = result.fleet
    assert fleet is not None
    point = fleet.point
    rows = (
        ("target load", f"{fmt.rate(fleet.qps)} inferences/s"),
        ("one replica's capacity within budget", f"{fmt.rate(fleet.capacity)} inferences/s"),
        ("planned utilization", f"{fleet.utilization:.0%} "
         f"({fmt.rate(fleet.utilization * fleet.capacity)}/s each)"),
        ("replicas", str(fleet.replicas)),
        ("headroom at the target load", f"{fleet.headroom:.0%}"),
        ("machine", f"{fleet.machine.id} ({fmt.dollars(fleet.machine.price_per_hour)}/hour)"),
        ("fleet $/hour", fmt.dollars(fleet.dollars_per_hour)),
        ("fleet $/month (730 h)", fmt.dollars(fleet.dollars_per_month)),
        ("$ per million inferences at the target load", fmt.dollars(fleet.dollars_per_million)),
        (
            "autoscaler target (mean queue time per request)",
            f"{fleet.autoscaler_target_us} us (at the operating point)",
        ),
        ("each replica at the operating point (the measured level nearest under the "
         "planned utilization)", f"concurrency {point.concurrency:g}, "
         f"{fmt.rate(point.throughput)}/s, {result.settings.stat} {fmt.ms(point.latency_us)} ms"),
    )  # fmt: skip
    blocks: list[Block] = [
        Heading(3, "Capacity plan"),
        Table(headers=("", ""), rows=rows, numeric=(False, True)),
    ]
    lines = [
        f"{n} replicas driven at concurrency {p.concurrency} in all: {fmt.rate(p.throughput)} "
        f"inferences/s, {result.settings.stat} {fmt.ms(p.latency_us)} ms predicted"
        for n, p in sorted(result.predictions.items())
    ]
    blocks.append(
        Paragraph(
            "The model: one replica's measured curve read at the planned utilization, times "
            "the replicas (a balancer spreads requests evenly; replicas share no hardware). "
            "values.yaml sets replicaCount, the autoscaler (queue time) and resources for "
            "the chart deploy/helm/bertserve; config.pbtxt goes into the model repository."
        )
    )
    blocks.append(Bullets(tuple(lines)))
    return blocks


def _front_table(front: Sequence[FrontPoint], result: PlanResult) -> Table:
    stat = result.settings.stat
    price = result.machine.price_per_hour
    budget = result.settings.budget_us
    rows = tuple(
        (
            f"#{fp.outcome.order} {fp.outcome.candidate.label}",
            f"{fp.measurement.load:g}",
            fmt.rate(fp.measurement.throughput),
            fmt.ms(fp.measurement.latency_us(stat)),
            fmt.dollars(cost_per_million(price, fp.measurement.throughput)),
            "yes" if fp.measurement.latency_us(stat) <= budget else "no",
        )
        for fp in front
    )
    return Table(
        headers=(
            "candidate",
            "concurrency",
            "inferences/s",
            f"{stat} ms",
            f"$ per million ({result.machine.id})",
            "within budget",
        ),
        rows=rows,
        numeric=(False, True, True, True, True, False),
    )


def _candidates_table(result: PlanResult) -> Table:
    stat = result.settings.stat
    price = result.machine.price_per_hour
    rows = []
    for o in result.search.outcomes:
        best = o.best
        rows.append(
            (
                str(o.order),
                o.candidate.label,
                o.via,
                o.status,
                str(len(o.points)),
                fmt.rate(best.throughput) if best else "",
                f"{best.load:g}" if best else "",
                fmt.ms(best.latency_us(stat)) if best else "",
                fmt.dollars(cost_per_million(price, best.throughput)) if best else "",
                o.reason,
            )
        )
    return Table(
        headers=(
            "#",
            "candidate",
            "how the search got there",
            "status",
            "points",
            "inferences/s",
            "at concurrency",
            f"{stat} ms",
            "$ per million",
            "why",
        ),
        rows=tuple(rows),
        numeric=(True, False, False, False, True, True, True, True, True, False),
    )


def _front_png(
    outcomes: Sequence[Outcome], front: Sequence[FrontPoint], result: PlanResult
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure as MplFigure

    stat = result.settings.stat
    fig = MplFigure(figsize=(9.5, 5.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    xs = [p.measurement.throughput for o in outcomes for p in o.points]
    ys = [p.measurement.latency_us(stat) / 1000 for o in outcomes for p in o.points]
    ax.scatter(xs, ys, s=14, color="#9aa5b1", label="measured points")
    fx = [fp.measurement.throughput for fp in front]
    fy = [fp.measurement.latency_us(stat) / 1000 for fp in front]
    ax.plot(fx, fy, "o-", color="#1f77b4", ms=5, lw=1.6, label="Pareto front")
    winner = result.search.winner
    if winner is not None and winner.best is not None:
        ax.plot(
            winner.best.throughput,
            winner.best.latency_us(stat) / 1000,
            "*",
            ms=18,
            color="#f2b01e",
            mec="black",
            label="winner",
        )
    if result.settings.budget_ms is not None:
        ax.axhline(result.settings.budget_ms, color="crimson", ls="--", lw=1.2, label="budget")
    ax.set_xlabel("throughput (inferences/s)")
    ax.set_ylabel(f"{stat} latency (ms)")
    if ys and max(ys) / max(min(ys), 1e-9) > 20:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{result.settings.model}: the search's measured points")
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()

"""The plan's files: the winning config.pbtxt (ready to drop into the repository),
plan.json (everything, for scripts and the fleet check), each candidate's run as bertserve
JSON (for `bertserve report --input`), the report through the shared pipeline, and with a
target load the Helm values for deploy/helm/bertserve. (The original configs were written
before anything changed, by `restore.Restoration`.)"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from tritonclient.grpc import model_config_pb2

from bertserve import __version__
from bertserve.cost.model import cost_per_million
from bertserve.perf.profiler import command_line
from bertserve.perf.results import Run
from bertserve.plan.capacity_search import Outcome
from bertserve.plan.knobs import config_pbtxt
from bertserve.plan.sections import plan_sections
from bertserve.plan.session import PlanResult
from bertserve.report.pipeline import WrittenReport, produce_report

__all__ = ["PlanFiles", "candidate_runs", "helm_values", "pick_line", "write_plan"]

_KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU


class PlanFiles:
    def __init__(self, output: Path) -> None:
        self.output = output
        self.config = output / "config.pbtxt"
        self.plan = output / "plan.json"
        self.values = output / "values.yaml"
        self.runs = output / "runs"
        self.report: WrittenReport | None = None


def write_plan(result: PlanResult) -> PlanFiles:
    s = result.settings
    files = PlanFiles(s.output)
    s.output.mkdir(parents=True, exist_ok=True)
    winner = result.search.winner
    if result.winner_config is not None and winner is not None and winner.best is not None:
        best = winner.best
        model = winner.candidate.variant.model
        budget = "no budget" if s.budget_ms is None else f"{s.stat} <= {s.budget_ms:g} ms"
        files.config.write_text(
            f"# bertserve plan {result.finished}: the cheapest config of '{model}' found at "
            f"{budget}:\n# {best.throughput:.1f} inferences/s at concurrency {best.load:g}, "
            f"{s.stat} {best.latency_us(s.stat) / 1000:.1f} ms (plan.json has every "
            f"measurement).\n# Put it in <model repository>/{model}/config.pbtxt.\n"
            + config_pbtxt(result.winner_config),
            encoding="utf-8",
        )
    elif files.config.exists():
        files.config.unlink()  # a winner from an earlier plan in this folder is not this one's
    files.runs.mkdir(exist_ok=True)
    runs = candidate_runs(result)
    for outcome, run in runs:
        (files.runs / f"{outcome.order:03d}.json").write_text(run.to_json(), encoding="utf-8")
    if result.fleet is not None:
        files.values.write_text(helm_values(result), encoding="utf-8")
    files.plan.write_text(json.dumps(_plan_document(result), indent=2) + "\n", encoding="utf-8")
    if runs:
        files.report = produce_report(
            [(run, f"runs/{o.order:03d}.json") for o, run in runs],
            result.catalog,
            s.output,
            title=f"bertserve plan: {s.model}",
            stat=s.stat,
            budget_ms=s.budget_ms,
            guess=result.guess,
            sections=plan_sections(result),
            verdict_lines=(pick_line(result),),
        )
    return files


def pick_line(result: PlanResult) -> str:
    """The report's verdict: the plan's winner (the pipeline would pick by cost alone; the
    plan breaks ties within its measured noise by latency)."""
    s = result.settings
    budget = "no latency budget" if s.budget_ms is None else f"{s.stat} <= {s.budget_ms:g} ms"
    winner = result.search.winner
    if winner is None or winner.best is None:
        return f"Verdict: no configuration of {s.model} met {budget}."
    best, machine = winner.best, result.machine
    cost = cost_per_million(machine.price_per_hour, best.throughput)
    return (
        f"Verdict at {budget}: pick #{winner.order} {winner.candidate.label} on {machine.id}, "
        f"${cost:.4g} per million inferences at concurrency {best.load:g}, {s.stat} "
        f"{best.latency_us(s.stat) / 1000:.1f} ms: the highest throughput within the budget "
        f"(candidates within the {result.search.noise.value:.1%} noise of it tie, and the "
        "quickest of them wins); its config.pbtxt is beside this report."
    )


def candidate_runs(result: PlanResult) -> list[tuple[Outcome, Run]]:
    """Each measured candidate as a bertserve run, priced on the cheapest machine."""
    s = result.settings
    random = result.original.parameters.get("weights")
    runs = []
    for outcome in result.search.measured:
        run = Run(
            label=f"#{outcome.order} {outcome.candidate.label}",
            model=outcome.candidate.variant.model,
            url=s.perf.url,
            protocol=s.perf.protocol,
            machine=result.machine.id,
            batch_size=s.perf.batch_size,
            mode="concurrency",
            tool="bertserve perf",
            random_weights=random is not None and random.string_value == "random",
            notes=f"bertserve plan candidate ({outcome.via}; {outcome.status})",
            date=result.started,
            measurements=tuple(outcome.measurements),
        )
        runs.append((outcome, run))
    return runs


def helm_values(result: PlanResult) -> str:
    """Values for deploy/helm/bertserve: the replicas, the autoscaler on queue time, and the
    resources the winning config uses."""
    fleet = result.fleet
    config = result.winner_config
    winner = result.search.winner
    assert fleet is not None and config is not None and winner is not None
    s = result.settings
    on_gpu = any(g.kind == _KIND_GPU for g in config.instance_group)
    knobs = winner.candidate.knobs
    values: dict[str, Any] = {
        "image": {"tag": "gpu" if on_gpu else "cpu"},
        "replicaCount": fleet.replicas,
        "gpus": 1 if on_gpu else 0,
    }
    if on_gpu:
        values["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    else:
        cores = max(1, knobs.threads * knobs.instances) if knobs.threads else None
        if cores is not None:
            values["resources"] = {"requests": {"cpu": str(cores)}}
    values["autoscaling"] = {
        "enabled": True,
        "minReplicas": fleet.replicas,
        "maxReplicas": fleet.max_replicas,
        "metric": "bertserve_queue_time_us",
        "target": str(fleet.autoscaler_target_us),
    }
    args = command_line(s.perf).split()
    best = winner.best
    assert best is not None
    load = int(best.load)
    args = _without(args, ("-m", "-u", "-i", "--concurrency-range"))
    values["perfJob"] = {
        "enabled": False,
        "model": winner.candidate.variant.model,
        "protocol": s.perf.protocol,
        "args": ["--concurrency-range", f"{load}:{load}:1", *args],
    }
    budget = "no budget" if s.budget_ms is None else f"{s.stat} <= {s.budget_ms:g} ms"
    header = [
        f"# Helm values for deploy/helm/bertserve, from bertserve plan {result.finished}.",
        f"# '{winner.candidate.variant.model}' at {budget}: {fleet.replicas} replicas of "
        f"{fleet.machine.id} ({fleet.machine.name}) carry",
        f"# {fleet.qps:g} inferences/s at {fleet.utilization:.0%} of each one's capacity "
        f"({fleet.capacity:.1f}/s); ${fleet.dollars_per_hour:.4g}/hour, "
        f"${fleet.dollars_per_month:,.0f}/month.",
        "# The autoscaler holds the mean queue time per request at what one replica showed at "
        "that utilization.",
        "# Put the plan's config.pbtxt into the model repository the chart serves "
        "(modelRepository.uri); pin the",
        f"# pods to {fleet.machine.id} nodes with nodeSelector. Use with: helm install NAME "
        "deploy/helm/bertserve -f values.yaml",
    ]
    body: str = yaml.safe_dump(values, sort_keys=False)
    return "\n".join(header) + "\n" + body


def _without(args: list[str], flags: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in flags:
            skip = True
            continue
        out.append(arg)
    return out


def _plan_document(result: PlanResult) -> dict[str, Any]:
    s = result.settings
    search = result.search
    winner = search.winner
    return {
        "format": "bertserve.plan",
        "format_version": 1,
        "bertserve": __version__,
        "started": result.started,
        "finished": result.finished,
        "model": s.model,
        "url": s.perf.url,
        "protocol": s.perf.protocol,
        "stat": s.stat,
        "budget_ms": s.budget_ms,
        "measurement": command_line(s.perf),
        "machines": [
            {"id": m.id, "name": m.name, "price_per_hour": m.price_per_hour}
            for m in result.machines
        ],
        "variants": [v.text() for v in result.variants],
        "configurations_on_ladders": result.space.size() * len(result.variants),
        "measurements": search.measurements,
        "stopped": search.stopped,
        "noise": asdict(search.noise),
        "seed": _outcome(search.seed, s.stat),
        "winner": _outcome(winner, s.stat) if winner else None,
        "confirmation": search.confirmation.measurement.to_dict() if search.confirmation else None,
        "candidates": [_outcome(o, s.stat) for o in search.outcomes],
        "fleet": _fleet(result),
        "predictions": {str(n): asdict(p) for n, p in result.predictions.items()},
        "restore_problems": result.restore_problems,
        "notes": result.notes,
    }


def _outcome(o: Outcome, stat: str) -> dict[str, Any]:
    k = o.candidate.knobs
    return {
        "order": o.order,
        "model": o.candidate.variant.model,
        "variant": o.candidate.variant.name,
        "parameters": dict(o.candidate.variant.parameters),
        "knobs": asdict(k),
        "label": o.candidate.label,
        "via": o.via,
        "status": o.status,
        "reason": o.reason,
        "best": o.best.to_dict() if o.best else None,
        "points": [{**p.measurement.to_dict(), "window_spread": p.spread} for p in o.points],
    }


def _fleet(result: PlanResult) -> dict[str, Any] | None:
    f = result.fleet
    if f is None:
        return None
    return {
        "qps": f.qps,
        "machine": f.machine.id,
        "capacity": f.capacity,
        "utilization": f.utilization,
        "replicas": f.replicas,
        "headroom": f.headroom,
        "dollars_per_hour": f.dollars_per_hour,
        "dollars_per_month": f.dollars_per_month,
        "dollars_per_million": f.dollars_per_million,
        "autoscaler_target_queue_us": f.autoscaler_target_us,
        "max_replicas": f.max_replicas,
        "operating_point": asdict(f.point),
    }

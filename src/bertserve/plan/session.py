"""One plan from start to end: check the server, remember its models, search, put the models
back, size the fleet. Writing the files is `outputs.py`'s; printing, `display.py`'s."""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from tritonclient.grpc import model_config_pb2

from bertserve.cost.catalog import Catalog, Machine, load_catalog
from bertserve.cost.host import MachineGuess, guess_machine, this_host
from bertserve.errors import BertserveError
from bertserve.plan.bench import ServerBench
from bertserve.plan.capacity import FleetPlan, Prediction, operating_point, plan_fleet, predict
from bertserve.plan.control import ModelControl
from bertserve.plan.knobs import Candidate, Variant, knobs_of, uses_onnxruntime
from bertserve.plan.restore import Restoration, interruptible
from bertserve.plan.search import SearchEvents, SearchResult, SearchSettings, search
from bertserve.plan.settings import PlanSettings
from bertserve.plan.space import Limits, Space
from bertserve.plan.variants import find_variants

__all__ = ["PlanError", "PlanInterrupted", "PlanResult", "run_plan"]

#: Most instances tried on a GPU (each holds its own copy of the engine).
GPU_MAX_INSTANCES = 4
_KIND_GPU = model_config_pb2.ModelInstanceGroup.KIND_GPU


class PlanError(BertserveError):
    """The plan could not start or go on; the message says why and what to do."""


class PlanInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM ended the plan; the models were put back (`problems`: those that
    could not be, each with what to do)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("interrupted")
        self.problems = problems

    def text(self) -> str:
        return f"interrupted; {_restored(self.problems)}"


@dataclass
class PlanResult:
    settings: PlanSettings
    catalog: Catalog
    #: The machines offered, cheapest first; the first prices the plan.
    machines: list[Machine]
    #: How the machine was priced when --machine was not given (the planner's own machine,
    #: taken to be the server's).
    guess: MachineGuess | None
    original: model_config_pb2.ModelConfig
    seed: Candidate
    variants: list[Variant]
    space: Space
    search: SearchResult
    #: The config the winner was loaded with (None when nothing met the budget).
    winner_config: model_config_pb2.ModelConfig | None
    fleet: FleetPlan | None
    #: What N replicas of the winner should measure, by N (2, and the fleet's size).
    predictions: dict[int, Prediction]
    #: Models that could not be put back, each with what to do (empty: all restored).
    restore_problems: list[str]
    started: str
    finished: str
    notes: list[str] = field(default_factory=list)

    @property
    def machine(self) -> Machine:
        return self.machines[0]


def run_plan(
    settings: PlanSettings,
    events: SearchEvents | None = None,
    *,
    say: Callable[[str], None] = print,
) -> PlanResult:
    """Search the server's model (see `bertserve.plan.search`), put every model back, and
    size the fleet when a target load is given. Raises PlanError (nothing was changed) when
    the plan cannot start; KeyboardInterrupt passes through after the restore."""
    settings.check()
    started = _now()
    catalog = load_catalog(*settings.catalogs)
    machines, guess = _machines(settings, catalog)
    notes: list[str] = []
    control = ModelControl(settings.perf.url, settings.perf.protocol)
    try:
        if not control.live():
            raise PlanError(f"the server at {settings.perf.url} is not live")
        control.check_explicit()
        index = control.index()
        model = settings.model
        names = [row["name"] for row in index]
        if model not in names:
            raise PlanError(
                f"no model '{model}' in the server's repository; it holds: "
                f"{', '.join(sorted(set(names))) or 'nothing'}"
            )
        if not control.ready(model):
            raise PlanError(
                f"'{model}' is not loaded: load it first (bertserve serve --load-model {model}, "
                f"or POST /v2/repository/models/{model}/load), then plan it"
            )
        original = control.config(model)
        seed_variant, others = find_variants(model, original, names)
        if not settings.variants:
            others = []
        vcpus, vcpu_note = _vcpus(machines)
        if vcpu_note:
            notes.append(vcpu_note)
        space = Space(knobs_of(original), _limits(settings, original, vcpus))
        seed = Candidate(seed_variant, space.canonical(knobs_of(original)))
        restoration = Restoration(control, say=say, folder=settings.output)
        restoration.remember(model)
        warnings: list[str] = []
        bench = ServerBench(control, restoration, settings.perf, seed, original, warnings.append)
        search_settings = SearchSettings(
            stat=settings.stat,
            budget_us=settings.budget_us,
            noise_floor=settings.noise_floor,
            max_measurements=settings.max_measurements,
            max_seconds=math.inf if settings.max_minutes is None else settings.max_minutes * 60,
            max_concurrency=settings.max_concurrency,
            client_batch=settings.perf.batch_size,
        )
        try:
            with interruptible():
                result = search(bench, space, seed, others, search_settings, events)
        except KeyboardInterrupt:
            raise PlanInterrupted(_restore(restoration, say)) from None
        except BertserveError as exc:
            problems = _restore(restoration, say)
            raise PlanError(f"{exc} ({_restored(problems)})") from exc
        except BaseException:
            _restore(restoration, say)
            raise
        problems = _restore(restoration, say)
        notes += _measurement_notes(result, warnings, settings)
    finally:
        control.close()
    winner = result.winner
    winner_config = bench.config(winner.candidate) if winner is not None else None
    fleet = None
    predictions: dict[int, Prediction] = {}
    if winner is not None and winner.best is not None:
        points = winner.measurements
        capacity = winner.best.throughput
        point = operating_point(points, capacity, settings.utilization, settings.stat)
        if settings.qps is not None:
            fleet = plan_fleet(
                settings.qps, machines[0], points, capacity, settings.utilization, settings.stat
            )
        for replicas in sorted({2, fleet.replicas if fleet else 2}):
            predictions[replicas] = predict(point, replicas)
    return PlanResult(
        settings=settings,
        catalog=catalog,
        machines=machines,
        guess=guess,
        original=original,
        seed=seed,
        variants=[seed_variant, *others],
        space=space,
        search=result,
        winner_config=winner_config,
        fleet=fleet,
        predictions=predictions,
        restore_problems=problems,
        started=started,
        finished=_now(),
        notes=notes,
    )


def _restore(restoration: Restoration, say: Callable[[str], None]) -> list[str]:
    problems = restoration.restore()
    for problem in problems:
        say(f"NOT RESTORED: {problem}")
    return problems


def _restored(problems: list[str]) -> str:
    if not problems:
        return "every model the plan changed was put back as it was"
    return "NOT every model could be put back: " + "; ".join(problems)


def _machines(
    settings: PlanSettings, catalog: Catalog
) -> tuple[list[Machine], MachineGuess | None]:
    """The machines given (cheapest first), or this machine's catalog entry guessed."""
    if settings.machines:
        machines = [catalog[m] for m in dict.fromkeys(settings.machines)]
        return sorted(machines, key=lambda m: m.price_per_hour), None
    guess = guess_machine(catalog, this_host())
    if guess.machine is None:
        raise PlanError(guess.sentence())
    return [guess.machine], guess


def _vcpus(machines: list[Machine]) -> tuple[int, str | None]:
    known = {m.vcpus for m in machines if m.vcpus}
    if len(known) == 1:
        return known.pop(), None
    if known:
        fewest = min(known)
        return fewest, (
            f"the machines given have {', '.join(map(str, sorted(known)))} vCPUs; threads x "
            f"instances are searched up to the fewest, {fewest}"
        )
    local = os.cpu_count() or 1
    return local, (
        f"no machine given lists its vCPUs; threads x instances are searched up to this "
        f"machine's {local}"
    )


def _limits(settings: PlanSettings, config: model_config_pb2.ModelConfig, vcpus: int) -> Limits:
    on_gpu = any(g.kind == _KIND_GPU for g in config.instance_group)
    threads = uses_onnxruntime(config) and not on_gpu
    most = min(settings.max_instances, GPU_MAX_INSTANCES if on_gpu else vcpus)
    return Limits(
        client_batch=settings.perf.batch_size,
        max_batch_size=settings.max_batch_size,
        max_instances=max(1, most),
        vcpus=vcpus,
        threads=threads,
        batching=config.max_batch_size > 0,
        max_delay_us=settings.budget_us,
    )


def _measurement_notes(
    result: SearchResult, warnings: list[str], settings: PlanSettings
) -> list[str]:
    """What the load generator warned about, once each; unstable points counted, not
    listed (each one's flag is in plan.json)."""
    points = [p.measurement for o in result.outcomes for p in o.points]
    unstable = sum(1 for m in points if not m.extras.get("stable", 1.0))
    notes = []
    if unstable:
        perf = settings.perf
        notes.append(
            f"{unstable} of {len(points)} points did not settle (no 3 windows within "
            f"±{perf.stability_percent:g}% in {perf.max_trials} trials) and were reported from "
            "their last windows, as perf_analyzer does: longer windows (-p) steady them"
        )
    others = [w for w in warnings if "windows agreed" not in w]
    return notes + list(dict.fromkeys(others))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

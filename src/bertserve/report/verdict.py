"""The verdict a report ends with: which deployment to pick at the budget, and what each
measured deployment costs next to the reference benchmark's deployment of the same model,
saying where the two were not measured alike (sequence length, batch, load)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bertserve.cost.host import MachineGuess
from bertserve.cost.model import format_ratio
from bertserve.report import formatting as fmt
from bertserve.report.analysis import Analysis, DeploymentSummary
from bertserve.report.reference import HeadlineRow, ReferenceBenchmark

__all__ = [
    "Kind",
    "KindOf",
    "Verdict",
    "pick_sentences",
    "reference_sentences",
    "unknown_kind",
]

#: The reference deployment a bertserve model is compared with: same architecture, same
#: device. On GPU the reference's headline is BERT-base with TensorRT, its cheapest row.
COUNTERPARTS: dict[tuple[str, str], str] = {
    ("distilbert", "cpu"): "bert_distill_tf_cpu",
    ("bert-base", "cpu"): "bert_base_tf_cpu",
    ("distilbert", "gpu"): "bert_distill_tf_gpu",
    ("bert-base", "gpu"): "bert_base_trt_gpu",
}


class Kind(Protocol):
    """What a served model is (bertserve.builder.presets.ModelKind, handed in by the
    commands: reports do not import the builder)."""

    @property
    def architecture(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def title(self) -> str: ...


#: Model name -> what it is, or None for a model nothing is known about.
KindOf = Callable[[str], "Kind | None"]


def unknown_kind(model: str) -> Kind | None:
    """The default: nothing is known about any model."""
    return None


@dataclass(frozen=True)
class Verdict:
    """The closing lines of a report, in the order they are printed."""

    assumption: str | None
    """How this machine was priced when the user did not say (the demo's guess)."""
    reference: tuple[str, ...]
    """One sentence per measured deployment against the reference benchmark."""
    pick: tuple[str, ...]
    """Which deployment to pick at the report's budget, and by how much (one line per
    sequence length measured)."""

    def lines(self) -> tuple[str, ...]:
        head = (self.assumption,) if self.assumption else ()
        return (*head, *self.reference, *self.pick)


def pick_sentences(analysis: Analysis, kind_of: KindOf = unknown_kind) -> tuple[str, ...]:
    """Model Analyzer's summary: the cheapest deployment within the budget and how many
    times cheaper per million inferences it is than the next, one line per sequence length
    (a cost per inference compares only deployments doing the same work). The 2-layer test
    model is picked only when nothing else was measured."""
    budget = analysis.budget_text
    costed = [s for s in analysis.summaries if s.best_cost is not None]
    if not costed:
        if not any(s.deployment.machine for s in analysis.summaries):
            return (
                "No verdict: no deployment has a machine price (tag each input with "
                "machine=ID; ids: `bertserve report --list-machines`).",
            )
        return (
            f"No verdict: no costed deployment has a point within {budget} "
            f"({_fastest(analysis)}); raise --latency-budget-ms.",
        )
    real = [s for s in costed if not _is_test_model(s, kind_of)]
    candidates = real or costed
    lengths = sorted({s.deployment.run.seq_len or 0 for s in candidates})
    lines = []
    for length in lengths:
        group = sorted(
            (s for s in candidates if (s.deployment.run.seq_len or 0) == length),
            key=lambda s: s.best_cost or 0.0,
        )
        workload = "" if len(lengths) == 1 else (f" at seq {length}" if length else " (seq ?)")
        lines.append(_pick(group, analysis, workload, kind_of))
    return tuple(lines)


def _pick(
    group: list[DeploymentSummary], analysis: Analysis, workload: str, kind_of: KindOf
) -> str:
    first = group[0]
    head = (
        f"Verdict{workload}: pick {first.deployment.label} on {_machine_id(first)}, "
        f"{fmt.dollars(first.best_cost)} per million inferences at {_point(first, analysis)}"
    )
    if _is_test_model(first, kind_of):
        head += " (a 2-layer test model: a smoke test, not a BERT QA deployment)"
    if len(group) == 1:
        where = "" if analysis.budget_ms is None else f" with a point within {analysis.budget_text}"
        return head + f"; the only costed deployment{where}."
    second = group[1]
    ratio = (second.best_cost or 0.0) / (first.best_cost or math.inf)
    at = "with no latency budget" if analysis.budget_ms is None else f"at {analysis.budget_text}"
    return (
        head + f": {format_ratio(ratio)} x cheaper per million inferences than "
        f"{second.deployment.label} ({fmt.dollars(second.best_cost)}) {at}."
    )


def _is_test_model(s: DeploymentSummary, kind_of: KindOf) -> bool:
    kind = kind_of(s.deployment.run.model or s.deployment.label)
    return kind is not None and kind.architecture == "tiny"


def reference_sentences(
    analysis: Analysis,
    bench: ReferenceBenchmark,
    rows: list[HeadlineRow],
    guess: MachineGuess | None = None,
    kind_of: KindOf = unknown_kind,
) -> tuple[str, ...]:
    """Each measured deployment against the reference's deployment of the same model on the
    same kind of device: dollars per million inferences side by side, and whether the two
    were measured at the same sequence length, batch and load."""
    by_id = {r.deployment.id: r for r in rows}
    reference_labels = {d.label for d in bench.deployments}
    sentences = []
    for s in analysis.summaries:
        if s.deployment.label in reference_labels:
            continue
        sentences.append(_against_reference(s, analysis, by_id, guess, kind_of))
    return tuple(sentences)


def _against_reference(
    s: DeploymentSummary,
    analysis: Analysis,
    headline: dict[str, HeadlineRow],
    guess: MachineGuess | None,
    kind_of: KindOf,
) -> str:
    d = s.deployment
    kind = kind_of(d.run.model or d.label)
    name = kind.title if kind else d.label
    where = _where(s, guess)
    if s.best is None:
        return f"{name} ({d.label}) on {where}: no point within {analysis.budget_text}."
    if s.best_cost is None:
        return f"{name} ({d.label}): not costed (no machine price)."
    ours = f"{name} on {where}: {fmt.dollars(s.best_cost)} per million inferences at " + (
        _point(s, analysis)
    )
    unstable = not s.best.extras.get("stable", 1.0)
    if unstable:
        ours += " (a point that did not stabilize: measure again on a quiet machine)"
    counterpart = COUNTERPARTS.get((kind.architecture, kind.device)) if kind else None
    row = headline.get(counterpart) if counterpart else None
    if row is None:
        return ours + "; the reference has no deployment of this model to compare with."
    ref = row.deployment
    theirs = row.cost_readme
    if s.best_cost <= theirs:
        ratio = f"{format_ratio(theirs / s.best_cost if s.best_cost else math.inf)} x cheaper"
    else:
        ratio = f"{format_ratio(s.best_cost / theirs)} x dearer"
    setting = _setting(s, ref.run.seq_len, ref.run.batch_size, row)
    if unstable:  # one parenthesis, not two
        ours = ours.removesuffix(")") + f"; {setting})"
    else:
        ours += f" ({setting})"
    return f"{ours}; the reference's {ref.label} on {ref.machine}: {fmt.dollars(theirs)} ({ratio})."


def _setting(s: DeploymentSummary, seq_len: int | None, batch: int, row: HeadlineRow) -> str:
    """The measured point's sequence length, batch and load, next to the reference's when
    they differ."""
    run, best = s.deployment.run, s.best
    assert best is not None
    loads = [m.load for m in row.deployment.run.measurements]
    low, high = min(loads), max(loads)
    same = (
        run.seq_len == seq_len
        and run.batch_size == batch
        and best.mode == "concurrency"
        and low <= best.load <= high
    )
    load = fmt.load_phrase(best.load, best.mode)
    ours = f"seq {run.seq_len or '?'}, batch {run.batch_size}, {load}"
    if same:
        return f"{ours}: the reference's setting"
    return (
        f"{ours}; the reference measured seq {seq_len}, batch {batch}, concurrency {low:g}-{high:g}"
    )


def _where(s: DeploymentSummary, guess: MachineGuess | None) -> str:
    machine = s.deployment.machine
    guessed = guess.machine if guess is not None else None
    if guess is not None and guessed is not None and machine is not None and machine == guessed:
        host = guess.host
        size = f"{len(host.gpus)}-GPU" if host.gpus else f"{host.vcpus}-vCPU"
        return f"this {size} machine"
    return machine.id if machine is not None else "an unpriced machine"


def _machine_id(s: DeploymentSummary) -> str:
    machine = s.deployment.machine
    return machine.id if machine is not None else "an unpriced machine"


def _point(s: DeploymentSummary, analysis: Analysis) -> str:
    assert s.best is not None
    return f"{analysis.stat} {fmt.ms(s.best.latency_us(analysis.stat))} ms"


def _fastest(analysis: Analysis) -> str:
    stat = analysis.stat
    points = [
        (m.latency_us(stat), s.deployment.label)
        for s in analysis.summaries
        for m in s.deployment.run.measurements
        if m.errors == 0
    ]
    if not points:
        return "no point without errors"
    latency, label = min(points)
    return f"the lowest {stat} measured is {fmt.ms(latency)} ms, {label}"

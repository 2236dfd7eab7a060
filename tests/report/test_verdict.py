"""The verdict lines both `bertserve report` and `bertserve demo` end with."""

from __future__ import annotations

import pytest

from bertserve.builder.presets import model_kind
from bertserve.cost import load_catalog
from bertserve.cost.host import Host, guess_machine
from bertserve.perf.results import Measurement, Run
from bertserve.report.analysis import analyze
from bertserve.report.reference import headline_rows, load_reference
from bertserve.report.verdict import pick_sentences, reference_sentences


def _run(
    label: str,
    model: str,
    *,
    inferences: float,
    p99_ms: float,
    seq: int | None = 128,
    batch: int = 1,
    concurrency: int = 4,
    machine: str = "gcp-n1-standard-2",
    stable: bool = True,
) -> Run:
    point = Measurement(
        concurrency=concurrency,
        batch_size=batch,
        throughput=inferences,
        latency_p50_us=p99_ms * 500,
        latency_p90_us=p99_ms * 800,
        latency_p95_us=p99_ms * 900,
        latency_p99_us=p99_ms * 1000,
        extras={"stable": 1.0 if stable else 0.0},
    )
    return Run(
        label=label,
        model=model,
        machine=machine,
        batch_size=batch,
        seq_len=seq,
        measurements=(point,),
    )


def _sentences(*runs: Run, budget_ms: float | None = None) -> tuple[str, ...]:
    catalog = load_catalog()
    analysis = analyze([(r, "test") for r in runs], catalog, budget_ms=budget_ms)
    bench = load_reference()
    guess = guess_machine(catalog, Host(2))
    return reference_sentences(analysis, bench, headline_rows(bench, catalog), guess, model_kind)


def test_model_kinds_from_bertserve_names() -> None:
    kind = model_kind("bert_distill_onnx_cpu_int8")
    assert kind is not None and (kind.architecture, kind.device, kind.title) == (
        "distilbert",
        "cpu",
        "DistilBERT INT8",
    )
    gpu = model_kind("bert_base_trt_gpu")
    assert gpu is not None and (gpu.architecture, gpu.device) == ("bert-base", "gpu")
    assert model_kind("resnet50") is None


def test_at_the_reference_setting_the_sentence_says_so() -> None:
    # 12 inferences/s on $0.095/h: $2.199 per million; the reference's $52.78 is 24.0 x.
    run = _run(
        "ref point", "bert_distill_onnx_cpu_int8", inferences=12.0, p99_ms=817, seq=384, batch=2
    )
    (sentence,) = _sentences(run)
    assert sentence == (
        "DistilBERT INT8 on this 2-vCPU machine: $2.199 per million inferences at p99 817.0 ms "
        "(seq 384, batch 2, concurrency 4: the reference's setting); the reference's "
        "DistilBERT, TF, CPU on gcp-n1-standard-96: $52.78 (24.0 x cheaper)."
    )


def test_a_different_setting_is_named_in_the_same_sentence() -> None:
    run = _run("sweep", "bert_distill_onnx_cpu", inferences=7.7, p99_ms=776, concurrency=2)
    (sentence,) = _sentences(run)
    assert (
        "(seq 128, batch 1, concurrency 2; the reference measured seq 384, batch 2, "
        "concurrency 4-24)" in sentence
    )


def test_dearer_than_the_reference_says_dearer_and_unstable_says_so() -> None:
    run = _run(
        "slow", "bert_base_onnx_cpu", inferences=0.1, p99_ms=9000, seq=384, batch=2,
        machine="gcp-n1-standard-96", stable=False,
    )  # fmt: skip
    (sentence,) = _sentences(run)
    assert sentence.startswith("BERT-base FP32 on gcp-n1-standard-96: $12,667 per million")
    assert "did not stabilize" in sentence
    assert sentence.endswith(
        "the reference's BERT-base, TF, CPU on gcp-n1-standard-96: $105.6 (120.0 x dearer)."
    )


def test_models_without_a_counterpart_or_a_price() -> None:
    tiny = _run("tiny", "bert_tiny_onnx_cpu", inferences=900, p99_ms=9)
    other = _run("mine", "resnet50", inferences=10, p99_ms=50)
    unpriced = Run(label="free", model="bert_distill_onnx_cpu", measurements=tiny.measurements)
    sentences = _sentences(tiny, other, unpriced)
    assert sentences[0].endswith("the reference has no deployment of this model to compare with.")
    assert sentences[1].startswith("mine on this 2-vCPU machine: $")
    assert sentences[2] == "DistilBERT FP32 (free): not costed (no machine price)."


def _pick(*runs: Run, budget_ms: float | None = None) -> tuple[str, ...]:
    analysis = analyze([(r, "test") for r in runs], load_catalog(), budget_ms=budget_ms)
    return pick_sentences(analysis, model_kind)


def test_pick_one_line_per_sequence_length_and_never_the_test_model() -> None:
    lines = _pick(
        _run("tiny", "bert_tiny_onnx_cpu", inferences=900, p99_ms=9),
        _run("int8", "bert_distill_onnx_cpu_int8", inferences=50, p99_ms=115),
        _run("fp32", "bert_distill_onnx_cpu", inferences=10, p99_ms=435),
        _run("int8 384", "bert_distill_onnx_cpu_int8", inferences=12, p99_ms=817, seq=384),
    )
    assert lines == (
        "Verdict at seq 128: pick int8 on gcp-n1-standard-2, $0.5278 per million inferences "
        "at p99 115.0 ms: 5.00 x cheaper per million inferences than fp32 ($2.639) with no "
        "latency budget.",
        "Verdict at seq 384: pick int8 384 on gcp-n1-standard-2, $2.199 per million "
        "inferences at p99 817.0 ms; the only costed deployment.",
    )


def test_pick_within_a_budget() -> None:
    (line,) = _pick(
        _run("fast", "bert_distill_onnx_cpu_int8", inferences=50, p99_ms=115),
        _run("cheap", "bert_distill_onnx_cpu", inferences=80, p99_ms=900),
        budget_ms=500,
    )
    assert line.startswith("Verdict: pick fast on gcp-n1-standard-2, $0.5278")
    assert line.endswith("; the only costed deployment with a point within p99 latency <= 500 ms.")


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (1.0, "No verdict: no costed deployment has a point within p99 latency <= 1 ms (the "
         "lowest p99 measured is 115.0 ms, only); raise --latency-budget-ms."),
    ],
)  # fmt: skip
def test_no_pick_says_why(budget: float, expected: str) -> None:
    (line,) = _pick(_run("only", "bert_distill_onnx_cpu_int8", inferences=50, p99_ms=115),
                    budget_ms=budget)  # fmt: skip
    assert line == expected

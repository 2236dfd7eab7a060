"""The pipeline `bertserve report` and `bertserve demo` share: runs in, a report folder out."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertserve.cost.catalog import load_catalog
from bertserve.perf.results import Measurement, Run
from bertserve.report.inputs import InputError
from bertserve.report.pipeline import produce_report


def run(label: str) -> Run:
    point = Measurement(
        concurrency=1,
        batch_size=1,
        throughput=100.0,
        latency_p50_us=900.0,
        latency_p90_us=950.0,
        latency_p95_us=990.0,
        latency_p99_us=1000.0,
        server_compute_infer_us=800.0,
    )
    return Run(label=label, machine="gcp-n1-standard-4", measurements=(point,))


def test_runs_in_report_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = produce_report(
        [(run("a"), "a.json"), (run("b"), "b.json")], load_catalog(), out, title="T"
    )
    assert report.files.markdown == out / "report.md"
    assert report.files.markdown.read_text(encoding="utf-8").startswith("# T\n")
    assert [d.label for d in report.analysis.deployments] == ["a", "b"]
    assert report.reference is None and report.reference_sentence() is None


def test_a_label_used_twice_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="label\\(s\\) used twice: a; give each --input"):
        produce_report(
            [(run("a"), "1"), (run("a"), "2")], load_catalog(), tmp_path / "o", title="T"
        )
    assert not (tmp_path / "o").exists()


def test_the_reference_joins_the_deployments(tmp_path: Path) -> None:
    report = produce_report(
        [(run("a"), "a.json")], load_catalog(), tmp_path, title="T", reference=True
    )
    assert len(report.analysis.deployments) > 1
    sentence = report.reference_sentence()
    assert sentence is not None and sentence.startswith("Reference benchmark, README's headline")


def test_a_callers_sections_come_before_the_deployments_with_their_figures(
    tmp_path: Path,
) -> None:
    from bertserve.report.document import Figure, Heading, Paragraph

    png = _png()
    sections = [
        Heading(2, "Plan"),
        Paragraph("the caller's words"),
        Figure("own.png", png, "the caller's figure"),
    ]
    report = produce_report(
        [(run("a"), "a.json")], load_catalog(), tmp_path, title="T", sections=sections
    )
    text = report.files.markdown.read_text(encoding="utf-8")
    assert text.index("## Plan") < text.index("the caller's words") < text.index("## Deployments")
    assert (tmp_path / "own.png").read_bytes() == png
    assert tmp_path / "own.png" in report.files.figures
    assert "the caller&#x27;s figure" in report.files.html.read_text(encoding="utf-8")


def _png() -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure as MplFigure

    out = io.BytesIO()
    MplFigure(figsize=(1, 1)).savefig(out, format="png")
    return out.getvalue()


def test_a_callers_verdict_lines_replace_the_comparisons(tmp_path: Path) -> None:
    report = produce_report(
        [(run("a"), "a.json"), (run("b"), "b.json")],
        load_catalog(),
        tmp_path,
        title="T",
        verdict_lines=("Verdict: pick a, the caller says.",),
    )
    assert report.verdict.lines() == ("Verdict: pick a, the caller says.",)
    assert "Verdict: pick a, the caller says." in report.files.markdown.read_text()

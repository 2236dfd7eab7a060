"""Markdown and HTML rendering of report blocks, and a request-rate run through the report."""

from __future__ import annotations

from pathlib import Path

from bertserve.cli import main
from bertserve.perf.results import Measurement, Run, write_run
from bertserve.report.document import (
    Bullets,
    Figure,
    Heading,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)

BLOCKS = [
    Heading(1, "T <1>"),
    Paragraph("careful", emphasis=True),
    Bullets(("a", "b & c")),
    Table(headers=("name", "n"), rows=(("x|y", "1"),), numeric=(False, True)),
    Figure("plot.png", b"\x89PNG fake", "a plot"),
]


def test_markdown() -> None:
    md = render_markdown(BLOCKS)
    assert md.startswith("# T <1>\n\n**careful**\n\n- a\n- b & c\n")
    assert "| name | n |\n|---|---:|\n| x\\|y | 1 |" in md
    assert "![a plot](plot.png)" in md


def test_html_is_escaped_and_self_contained() -> None:
    page = render_html(BLOCKS, "T")
    assert "<h1>T &lt;1&gt;</h1>" in page
    assert '<p class="warn">careful</p>' in page
    assert "<li>b &amp; c</li>" in page
    assert '<td class="num">1</td>' in page
    assert 'src="data:image/png;base64,iVBORyBmYWtl"' in page


def test_request_rate_run_reports(tmp_path: Path) -> None:
    points = tuple(
        Measurement(
            request_rate=rate,
            throughput=rate * 2 * 0.98,
            batch_size=2,
            latency_p50_us=5000 + rate * 10,
            latency_p90_us=6000 + rate * 10,
            latency_p95_us=7000 + rate * 10,
            latency_p99_us=8000 + rate * 10,
            server_compute_infer_us=4000,
            delayed_sends=3 if rate == 400 else 0,
        )
        for rate in (100.0, 200.0, 400.0)
    )
    run = Run(
        label="rate",
        machine="gcp-g2-standard-4",
        batch_size=2,
        mode="request_rate",
        url="localhost:8001",
        protocol="grpc",
        measurements=points,
    )
    path = tmp_path / "rate.json"
    write_run(run, path)
    out = tmp_path / "out"
    assert main(["report", "-i", str(path), "-o", str(out), "--percentile", "p90"]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| rate | gcp-g2-standard-4 | $0.7068 | 400 req/s | 784 | 392 |" in md
    assert "the offered rate was not fully met" in md
    assert "grpc localhost:8001" in md

"""The HTML report in a real browser (headless Chromium): at a desktop width (1280 px) and a
phone's (390 px) nothing runs off the page, and at 1280 px every table fits unscrolled.
Screenshots go to $BERTSERVE_SCREENSHOTS when it is set, for a person to look at.

Headless Chromium will not make a window narrower than 500 px, so the report is shown in
an iframe of the width under test (an iframe is a viewport of its own, media queries
included); the report tells the page around it what it measured."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bertserve.cost import load_catalog
from bertserve.perf.results import Measurement, Run
from bertserve.report.pipeline import produce_report
from tests.conftest import find_tool

CHROMIUM = find_tool("chromium", "BERTSERVE_CHROMIUM")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (scripts/install installs Debian's)"
)

#: Added to a copy of the report: measures its layout and tells the frame around it.
MEASURE = """
<script>
window.addEventListener("load", () => {
  const scrolled = [...document.querySelectorAll(".table")]
    .filter(t => t.scrollWidth > t.clientWidth + 1).length;
  parent.postMessage(JSON.stringify({
    viewport: window.innerWidth, page: document.documentElement.scrollWidth,
    scrolled_tables: scrolled, tables: document.querySelectorAll(".table").length}), "*");
});
</script>
"""
#: The page around it: the report in a frame `width` px wide, the measurement written out
#: where --dump-dom shows it.
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="{src}" style="width:{width}px;height:{height}px;border:0;display:block"></iframe>
<pre id="layout"></pre>
<script>
window.addEventListener("message", e => {{
  document.getElementById("layout").textContent = e.data;
}});
</script></body></html>
"""


def _demo_like_run(label: str, seq: int, batch: int) -> Run:
    points = tuple(
        Measurement(
            concurrency=c,
            batch_size=batch,
            throughput=7.66 * c,
            latency_avg_us=955_780.0 * c,
            latency_p50_us=956_760.0 * c,
            latency_p90_us=1_316_870.0 * c,
            latency_p95_us=1_316_990.0 * c,
            latency_p99_us=1_454_320.0 * c,
            server_compute_infer_us=950_390.0 * c,
        )  # fmt: skip
        for c in (1, 2, 3, 4)
    )
    return Run(
        label=label, model="bert_distill_onnx_cpu_int8", machine="gcp-n1-standard-2",
        batch_size=batch, seq_len=seq, random_weights=True, protocol="http",
        url="127.0.0.1:45131", date="2026-11-30T17:20:00+00:00", measurements=points,
        notes="-m bert_distill_onnx_cpu_int8 -u 127.0.0.1:45131 -i http -b 2 "
        "--concurrency-range 4:4:1 -p 3000 -r 6 -s 10 --input-data random "
        "--shape input_ids:384 --shape attention_mask:384",
    )  # fmt: skip


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser")
    runs = [
        (
            _demo_like_run("bert_distill_onnx_cpu_int8 seq 384 batch 2", 384, 2),
            f"bertserve demo: {out}/runs/bert_distill_onnx_cpu_int8_seq_384_batch_2.json",
        ),
        (
            _demo_like_run("bert_distill_onnx_cpu_int8", 128, 1),
            f"bertserve demo: {out}/runs/x.json",
        ),
    ]
    report = produce_report(runs, load_catalog(), out / "report", title="browser check",
                            reference=True)  # fmt: skip
    page = out / "measured.html"
    page.write_text(report.files.html.read_text().replace("</body>", MEASURE + "</body>"))
    return page


def _framed(report: Path, width: int, height: int) -> Path:
    frame = report.parent / f"frame-{width}-{height}.html"
    frame.write_text(FRAME.format(src=report.name, width=width, height=height))
    return frame


def _chromium(*args: str) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-dev-shm-usage", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.mark.parametrize(("width", "tables_fit"), [(1280, True), (390, False)])
def test_nothing_runs_off_the_page(
    report_html: Path, tmp_path: Path, width: int, tables_fit: bool
) -> None:
    window = f"--window-size={max(width, 500)},900"
    frame = _framed(report_html, width, 900)
    dom = _chromium(window, "--virtual-time-budget=5000", "--dump-dom", frame.as_uri())
    match = re.search(r'<pre id="layout">(.+?)</pre>', dom)
    assert match, "the measuring script did not run"
    layout = json.loads(match.group(1).replace("&quot;", '"'))
    assert layout["viewport"] == width
    assert layout["page"] <= width, layout  # no sideways scrolling of the page
    assert layout["tables"] >= 5
    if tables_fit:
        assert layout["scrolled_tables"] == 0, layout  # at desktop width every table fits
    shot = tmp_path / f"report-{width}.png"
    frame = _framed(report_html, width, 2400)
    _chromium(f"--window-size={max(width, 500)},2400", f"--screenshot={shot}", frame.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("BERTSERVE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)

"""bertserve perf against the real perf_analyzer, on the same server, same model, same flags.

At each concurrency of a short sweep perf_analyzer measures just before and just after
bertserve perf, and ours must agree with the mean of the two within 10% (throughput) and 15%
(p50 latency). The machine is shared with the server (and, on a developer box, with whatever
else runs), so a level that disagrees is measured again, twice at most, before the test
fails. Both write the same CSV header.

The model runs without a batcher: with one, throughput depends on the phase in which each
client's requests arrive, a property of the client's timing rather than of the measurement,
and the two tools would be compared on different batch mixes (measured: at concurrency 4 our
single event loop resubmits four requests together, the batcher runs them as one batch of 4,
and throughput is 15-20% below perf_analyzer's, whose threads drift apart into smaller
batches on two instances of work). A config that names no inputs or outputs is
auto-completed the way Triton does it, which turns the dynamic batcher on for a batchable
model, so this one lists both.

Each request carries 8 rows (`-b 8`): in a closed loop a client's own time per request is part
of what both tools measure, and perf_analyzer's client spends ~140 us more per request than
ours (it parses every reply; ours reads the status), which at one ~1.5 ms row per request put
ours 8-10% above it on every run, at the tolerance's edge (measured: +10.1% at concurrency 1
in CI). With 8 rows the server's time per request is ~10 ms and that difference ~1.5%.
`pytest -s` prints the comparison
table (docs/benchmarks.md keeps one).
"""

from __future__ import annotations

import csv
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from bertserve.perf.analyzer import run_perf_analyzer
from bertserve.perf.profiler import profile
from bertserve.perf.results import Measurement, read_perf_analyzer_csv, write_perf_analyzer_csv
from bertserve.perf.session import run_async
from bertserve.perf.settings import LoadRange
from tests.conftest import TINY, ServerProcess, copy_model, needs_perf_analyzer, start_server
from tests.perf.conftest import tiny_settings

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.perf_analyzer,
    needs_perf_analyzer,
    # Our load generator runs in this process: a coverage tracer would slow it, and the
    # comparison with perf_analyzer's timing is the point of the test.
    pytest.mark.no_cover,
]

MODEL = "steady"
#: Long enough that compute, not either tool's own CPU, sets the pace: client and server
#: share the machine's 2 cores, and perf_analyzer's client costs more CPU per request.
STEADY_SEQ = 384
STEADY_SHAPES = {name: (STEADY_SEQ,) for name in ("input_ids", "attention_mask", "token_type_ids")}
#: Rows per request, for both tools (see the module docstring).
BATCH = 8
LEVELS = (1, 2, 4)
#: Inputs and outputs listed, so auto-complete leaves the scheduler alone: no batcher.
STEADY_CONFIG = "\n".join(
    [
        'platform: "onnxruntime_onnx"',
        "max_batch_size: 8",
        *(
            f'input {{ name: "{name}" data_type: TYPE_INT64 dims: [ -1 ] }}'
            for name in ("input_ids", "attention_mask", "token_type_ids")
        ),
        *(
            f'output {{ name: "{name}" data_type: TYPE_FP32 dims: [ -1 ] }}'
            for name in ("start_logits", "end_logits")
        ),
    ]
)
WINDOW_MS = 1000
STABILITY = 20
THROUGHPUT_TOLERANCE = 0.10
P50_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def steady_server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("steady")
    copy_model(tiny_repo, TINY, repo, MODEL, STEADY_CONFIG)
    server = start_server(repo)
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{MODEL}/config") as r:
        config = json.load(r)
    assert "dynamic_batching" not in config, "the comparison assumes no batcher"
    yield server
    server.stop()


def perf_analyzer(server: ServerProcess, concurrency: int, report: Path) -> Measurement | None:
    """perf_analyzer's point, or None when it found no stable windows (it exits 2 then)."""
    shapes = []
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        shapes += ["--shape", f"{name}:{STEADY_SEQ}"]
    args = [
        "-m", MODEL, "-u", server.http_url, "-i", "http", "--async", "-z",
        "--concurrency-range", str(concurrency), "-p", str(WINDOW_MS), "-r", "8",
        "-b", str(BATCH),
        "-s", str(STABILITY), *shapes, "-f", str(report),
    ]  # fmt: skip
    done = run_perf_analyzer(args, timeout=120)
    if done.returncode == 2 and "Failed to obtain stable measurement" in done.stdout + done.stderr:
        return None
    assert done.returncode == 0, done.stdout + done.stderr
    (m,) = read_perf_analyzer_csv(report, batch_size=BATCH)
    return m


def bertserve_perf(server: ServerProcess, concurrency: int) -> Measurement:
    settings = tiny_settings(
        server,
        model=MODEL,
        shapes=STEADY_SHAPES,
        concurrency=LoadRange(concurrency, concurrency, 1),
        window_ms=float(WINDOW_MS),
        max_trials=8,
        batch_size=BATCH,
        stability_percent=float(STABILITY),
    )
    (m,) = run_async(profile(settings)).measurements
    return m


@dataclass(frozen=True)
class Reference:
    """perf_analyzer's point, measured just before and just after ours: the mean of the two
    cancels the drift of a shared machine between back-to-back measurements."""

    throughput: float
    latency_p50_us: float

    @classmethod
    def around(cls, before: Measurement, after: Measurement) -> Reference:
        return cls(
            (before.throughput + after.throughput) / 2,
            (before.latency_p50_us + after.latency_p50_us) / 2,
        )


def agree(ours: Measurement, theirs: Reference) -> bool:
    tp = abs(ours.throughput - theirs.throughput) / theirs.throughput
    p50 = abs(ours.latency_p50_us - theirs.latency_p50_us) / theirs.latency_p50_us
    return tp <= THROUGHPUT_TOLERANCE and p50 <= P50_TOLERANCE


def test_matches_perf_analyzer(steady_server: ServerProcess, tmp_path: Path) -> None:
    server = steady_server
    rows = []
    for c in LEVELS:
        theirs = None
        for attempt in (1, 2, 3):
            before = perf_analyzer(server, c, tmp_path / f"pa_{c}_{attempt}a.csv")
            ours = bertserve_perf(server, c)
            after = perf_analyzer(server, c, tmp_path / f"pa_{c}_{attempt}b.csv")
            if before is None or after is None:
                continue
            theirs = Reference.around(before, after)
            if agree(ours, theirs):
                break
        if theirs is None:
            pytest.skip(
                f"perf_analyzer itself found no stable windows at concurrency {c}, "
                "in every attempt: the machine is too busy for a comparison"
            )
        rows.append((c, attempt, ours, theirs))
    print(
        f"\n{'conc':>4} {'try':>3} {'perf_analyzer inf/s':>20} {'bertserve inf/s':>16} "
        f"{'diff':>6} {'PA p50 us':>10} {'ours p50 us':>12} {'diff':>6} {'our CPU':>8}"
    )
    for c, attempt, ours, theirs in rows:
        dt = ours.throughput / theirs.throughput - 1
        dp = ours.latency_p50_us / theirs.latency_p50_us - 1
        print(
            f"{c:>4} {attempt:>3} {theirs.throughput:>20.1f} {ours.throughput:>16.1f} "
            f"{dt:>+6.1%} {theirs.latency_p50_us:>10.0f} {ours.latency_p50_us:>12.0f} "
            f"{dp:>+6.1%} {ours.extras['client_cpu_fraction']:>8.0%}"
        )
    # Same columns, same order, as the real tool writes them.
    with next(tmp_path.glob("pa_1_*.csv")).open() as f:
        their_header = next(csv.reader(f))
    write_perf_analyzer_csv([ours for _, _, ours, _ in rows], tmp_path / "ours.csv")
    with (tmp_path / "ours.csv").open() as f:
        assert next(csv.reader(f)) == their_header
    for c, _, ours, theirs in rows:
        assert ours.throughput == pytest.approx(theirs.throughput, rel=THROUGHPUT_TOLERANCE), c
        assert ours.latency_p50_us == pytest.approx(theirs.latency_p50_us, rel=P50_TOLERANCE), c

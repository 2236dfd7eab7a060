"""Prometheus metrics: Triton's names, an exposition promtool accepts, CPU metrics from /proc,
latency summaries behind --metrics-config, and the flags that turn them on and off."""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bertserve.cli import build_parser
from bertserve.commands.serve import settings_from_args
from bertserve.metrics import CpuMetrics, MetricsServer, build_registry, exposition
from bertserve.settings import ServerSettings
from bertserve.stats import LatencyWindow, ModelStats, RequestTiming
from tests.server.prometheus_text import (
    needs_promtool,
    promtool_remarks,
    samples,
    unexpected_remarks,
)


def _stats(name: str = "m", requests: int = 40, window: bool = True) -> ModelStats:
    stats = ModelStats(name, "1", window=LatencyWindow() if window else None)
    for i in range(requests):
        t = RequestTiming(arrival=0, dispatch=1_000 * (i + 1))  # queue: 1..40 us
        t.input_done = t.dispatch + 2_000
        t.infer_done = t.input_done + 100_000 * (i + 1)  # infer: 100..4,000 us
        t.output_done = t.infer_done + 3_000
        stats.record_success(t, batch_items=2, end_ns=t.output_done + 500)
    stats.record_execution(2, 2_000, 100_000, 3_000)
    return stats


def _text(settings: ServerSettings, *stats: ModelStats) -> str:
    registry = build_registry(
        lambda: stats, lambda: [(s.name, s.version, 3) for s in stats], settings
    )
    return exposition(registry).decode()


def test_help_and_type_name_each_metric_as_itssamples() -> None:
    text = _text(ServerSettings(metrics_summary_latencies=True), _stats())
    declared = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE)
    helped = set(re.findall(r"^# HELP (\S+) ", text, re.MULTILINE))
    assert {n for n, _ in declared} == helped
    kinds = dict(declared)
    assert kinds["nv_inference_count"] == "counter"  # Triton's name, no _total
    assert kinds["nv_inference_request_summary_us"] == "summary"
    assert kinds["nv_inference_pending_request_count"] == "gauge"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            family = line.split("{")[0].split()[0]
            base = re.sub(r"_(count|sum)$", "", family)
            assert family in kinds or base in kinds, line


def test_summaries_report_the_windows_quantiles_and_cumulative_count_and_sum() -> None:
    stats = _stats()
    settings = ServerSettings(metrics_summary_latencies=True, metrics_summary_quantiles=(0.5, 0.99))
    text = _text(settings, stats)
    labels = '{model="m",version="1"}'
    assert samples(text, "nv_inference_request_summary_us_count")[labels] == 40
    assert samples(text, "nv_inference_request_success")[labels] == 40
    # _sum matches the counter (Triton documents that they agree).
    infer_sum = samples(text, "nv_inference_compute_infer_summary_us_sum")[labels]
    assert infer_sum == pytest.approx(
        samples(text, "nv_inference_compute_infer_duration_us")[labels]
    )
    quantiles = samples(text, "nv_inference_compute_infer_summary_us")
    # 40 requests of 100, 200, ... 4,000 us: the median is 2,000, the p99 4,000.
    assert quantiles['{model="m",version="1",quantile="0.5"}'] == 2000
    assert quantiles['{model="m",version="1",quantile="0.99"}'] == 4000
    assert (
        samples(text, "nv_inference_queue_summary_us")['{model="m",version="1",quantile="0.5"}']
        == 20
    )


def test_summaries_are_off_by_default_and_counters_can_be_turned_off() -> None:
    text = _text(ServerSettings(), _stats(window=False))
    assert "summary_us" not in text
    assert "nv_inference_request_duration_us{" in text
    text = _text(ServerSettings(metrics_counter_latencies=False), _stats(window=False))
    assert "duration_us" not in text
    assert "nv_inference_request_success{" in text


def test_a_quiet_window_reports_nan_quantiles() -> None:
    stats = _stats(requests=0)
    text = _text(ServerSettings(metrics_summary_latencies=True), stats)
    values = samples(text, "nv_inference_request_summary_us")
    assert values and all(math.isnan(v) for v in values.values())


def test_old_requests_leave_the_window() -> None:
    window = LatencyWindow(max_age_s=10)
    window.add(100.0, (1.0,))
    window.add(105.0, (2.0,))
    assert window.recent(112.0) == [(2.0,)]
    assert window.recent(200.0) == []


def test_cpu_metrics_from_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n")
    (proc / "stat").write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")
    cpu = CpuMetrics(proc)
    # 300 more busy jiffies and 100 more idle ones since the collector was made.
    (proc / "stat").write_text("cpu  300 0 200 750 150 0 0 0 0 0\ncpu0 1 2 3 4\n")
    got = {m.name: m.samples[0].value for m in cpu.collect()}
    assert got == {
        "nv_cpu_utilization": pytest.approx(300 / 400),
        "nv_cpu_memory_total_bytes": 1000 * 1024,
        "nv_cpu_memory_used_bytes": 750 * 1024,
    }


def test_cpu_metrics_of_this_machine_are_plausible() -> None:
    cpu = CpuMetrics()
    sum(range(200_000))
    got = {m.name: m.samples[0].value for m in cpu.collect()}
    assert 0.0 <= got["nv_cpu_utilization"] <= 1.0
    assert 0 < got["nv_cpu_memory_used_bytes"] <= got["nv_cpu_memory_total_bytes"]


def test_cpu_metrics_can_be_turned_off() -> None:
    assert "nv_cpu_" in _text(ServerSettings(), _stats())
    assert "nv_cpu_" not in _text(ServerSettings(allow_cpu_metrics=False), _stats())


@needs_promtool
def test_promtool_finds_only_tritons_own_naming_choices() -> None:
    text = _text(ServerSettings(metrics_summary_latencies=True), _stats("a"), _stats("b"))
    assert promtool_remarks(text), "promtool found nothing at all: is it really checking?"
    assert not unexpected_remarks(text)


@needs_promtool
def test_promtool_still_catches_a_help_line_that_names_another_metric() -> None:
    """The test above can fail: the exposition prometheus_client writes for a counter
    without `_total` (HELP says `x_total`, samples say `x`) is what promtool reports."""
    bad = "# HELP x_total things\n# TYPE x_total counter\nx 1\n"
    assert "x no help text" in promtool_remarks(bad)
    assert unexpected_remarks(bad)


def test_metrics_server_serves_metrics_and_404_elsewhere() -> None:
    registry = build_registry(lambda: [_stats()], lambda: [], ServerSettings())
    server = MetricsServer("127.0.0.1", 0, registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert b"nv_inference_count{" in reply.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/other", timeout=10)
        assert err.value.code == 404
        err.value.close()
    finally:
        server.shutdown()
        server.server_close()


def _flags(*flags: str) -> ServerSettings:
    args = build_parser().parse_args(["serve", "--model-repository", "r", *flags])
    return settings_from_args(args)


def test_metrics_config_flags() -> None:
    assert _flags().metrics_summary_latencies is False
    s = _flags(
        "--metrics-config", "summary_latencies=true",
        "--metrics-config", "summary_quantiles=0.9:0.01,0.5:0.05",
        "--metrics-config", "counter_latencies=false",
        "--allow-cpu-metrics", "false",
    )  # fmt: skip
    assert s.metrics_summary_latencies is True
    assert s.metrics_summary_quantiles == (0.5, 0.9)
    assert s.metrics_counter_latencies is False
    assert s.allow_cpu_metrics is False


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("histograms=true", "KEY one of summary_latencies"),
        ("summary_latencies=maybe", "summary_latencies:"),
        ("summary_quantiles=1.5:0.1", "not between 0 and 1"),
    ],
)
def test_bad_metrics_config_is_a_usage_error(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _flags("--metrics-config", value)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "bertserve serve" in err and message in err

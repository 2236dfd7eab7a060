"""The sweep: for each load level, measurement windows until three agree (or `max_trials`
runs out), then one `Measurement` from the stable windows merged, as perf_analyzer does.

Around every window the server's statistics are read; their deltas give the server-side
breakdown (queue, compute input / infer / output per request). The load generator's own CPU
time per window (`time.process_time`) is recorded, and a window where it used most of a core
is flagged: the client, not the server, may then be what limits the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bertserve.perf.input_data import InputDataError, build_input_sets, input_specs
from bertserve.perf.load import ConcurrencyLoad, LoadGenerator, RequestRateLoad
from bertserve.perf.protocols import open_transport
from bertserve.perf.results import Measurement, Run
from bertserve.perf.server_metrics import MetricsScraper
from bertserve.perf.settings import PerfSettings
from bertserve.perf.shared_memory import SystemSharedMemory
from bertserve.perf.stability import STABILITY_WINDOWS, is_stable
from bertserve.perf.transport import Transport, TransportError
from bertserve.perf.window import (
    Recorder,
    ServerCounters,
    WindowSummary,
    merge_windows,
    server_counters,
    summarize,
)

__all__ = [
    "CLIENT_BUSY_FRACTION",
    "LATE_SHARE_WARNING",
    "SweepEvents",
    "WindowReport",
    "profile",
    "run_sweep",
]

#: Share of one core above which the load generator warns that it may be the bottleneck.
CLIENT_BUSY_FRACTION = 0.85
#: Request-rate mode: share of sends leaving late above which the sweep warns.
LATE_SHARE_WARNING = 0.10


@dataclass(frozen=True)
class WindowReport:
    """One finished window, for progress display."""

    load: float
    trial: int
    window: WindowSummary
    throughput: float
    judged_latency_us: float
    stable: bool


@dataclass
class SweepEvents:
    """Callbacks a front end (the CLI's progress display) may set; all optional."""

    on_start: Callable[[PerfSettings, list[float]], None] | None = None
    on_window: Callable[[WindowReport], None] | None = None
    on_point: Callable[[Measurement], None] | None = None
    on_warning: Callable[[str], None] | None = None


async def profile(settings: PerfSettings, events: SweepEvents | None = None) -> Run:
    """Run the sweep `settings` describes against its server and return the Run."""
    transport = open_transport(
        settings.protocol, settings.url, settings.model, settings.model_version
    )
    transport.headers = settings.http_headers
    # Automatic garbage collection would pause the event loop at random moments inside
    # windows and add client time to the measured latencies; collect between loads instead.
    collecting = gc.isenabled()
    gc.disable()
    try:
        await transport.start()
        return await run_sweep(settings, transport, events or SweepEvents())
    finally:
        if collecting:
            gc.enable()
        await transport.close()


async def run_sweep(settings: PerfSettings, transport: Transport, events: SweepEvents) -> Run:
    metadata = await transport.model_metadata()
    max_batch = await transport.max_batch_size()
    if max_batch > 0 and settings.batch_size > max_batch:
        raise InputDataError(
            f"-b {settings.batch_size} exceeds the model's max_batch_size {max_batch}"
        )
    specs = input_specs(metadata, max_batch)
    sets = build_input_sets(
        specs,
        settings.input_data,
        batch_size=settings.batch_size,
        batched=max_batch > 0,
        shapes=settings.shapes,
        string_length=settings.string_length,
    )
    await transport.check(sets[0])
    outputs = [str(o["name"]) for o in metadata.get("outputs", [])]
    async with _payloads(settings, transport, sets, outputs) as payloads:
        return await _sweep(settings, transport, events, payloads)


@contextlib.asynccontextmanager
async def _payloads(
    settings: PerfSettings,
    transport: Transport,
    sets: list[dict[str, np.ndarray]],
    outputs: list[str],
) -> AsyncIterator[list[Any]]:
    """Each input set encoded once; with `--shared-memory system` its tensors are written into
    regions registered for the sweep (and unregistered and removed after it, whatever
    happened), and the requests only name them."""
    if settings.shared_memory == "none":
        yield [transport.prepare(s) for s in sets]
        return
    memory = SystemSharedMemory(settings.output_shared_memory_size)
    registered: list[str] = []
    try:
        placed = memory.place(sets, outputs)
        for region in memory.regions:
            await transport.register_system_shared_memory(region.name, region.key, region.byte_size)
            registered.append(region.name)
        await transport.check(sets[0], placed[0])
        yield [transport.prepare(s, p) for s, p in zip(sets, placed, strict=True)]
    finally:
        for name in registered:
            with contextlib.suppress(TransportError):
                await transport.unregister_system_shared_memory(name)
        memory.close()


async def _sweep(
    settings: PerfSettings, transport: Transport, events: SweepEvents, payloads: list[Any]
) -> Run:
    recorder = Recorder()
    generator: LoadGenerator
    if settings.mode == "request_rate":
        generator = RequestRateLoad(
            transport,
            payloads,
            recorder,
            warmup_requests=settings.warmup_requests,
            distribution=settings.distribution,
            max_in_flight=settings.max_in_flight,
        )
    else:
        generator = ConcurrencyLoad(
            transport, payloads, recorder, warmup_requests=settings.warmup_requests
        )
    loads = settings.loads()
    if events.on_start:
        events.on_start(settings, loads)
    points: list[Measurement] = []
    stats = _ServerStats(settings, transport, events)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        for load in loads:
            gc.collect()
            await generator.set_level(load)
            point, judged_us = await _measure_level(
                settings, stats, generator, recorder, load, events
            )
            points.append(point)
            if events.on_point:
                events.on_point(point)
            judged_ms = judged_us / 1000
            if settings.latency_threshold_ms and judged_ms > settings.latency_threshold_ms:
                if events.on_warning:
                    events.on_warning(
                        f"{settings.judged_stat} latency {judged_ms:.1f} ms exceeds -l "
                        f"{settings.latency_threshold_ms:g} ms: sweep stopped"
                    )
                break
    finally:
        await generator.stop()
    return Run(
        label=settings.label or settings.model,
        model=settings.model,
        model_version=settings.model_version,
        url=settings.url,
        protocol=settings.protocol,
        machine=settings.machine,
        batch_size=settings.batch_size,
        seq_len=settings.seq_len,
        mode=settings.mode,
        tool="bertserve perf",
        notes=command_line(settings),
        date=started,
        measurements=tuple(points),
    )


class _ServerStats:
    """Reads the statistics endpoint around windows; a server without it (or one whose
    endpoint fails) costs only the server-side columns, after one warning."""

    def __init__(self, settings: PerfSettings, transport: Transport, events: SweepEvents) -> None:
        self.settings = settings
        self.transport = transport
        self.events = events
        self.available = True

    async def snapshot(self) -> ServerCounters | None:
        if not self.available:
            return None
        try:
            stats = await self.transport.statistics()
        except TransportError as exc:
            self.available = False
            if self.events.on_warning:
                self.events.on_warning(
                    f"no server statistics ({exc}); server-side columns will be 0"
                )
            return None
        return server_counters(stats, self.settings.model, self.settings.model_version)


def _delta(after: ServerCounters | None, before: ServerCounters | None) -> ServerCounters | None:
    return None if after is None or before is None else after - before


async def _measure_level(
    settings: PerfSettings,
    stats: _ServerStats,
    generator: LoadGenerator,
    recorder: Recorder,
    load: float,
    events: SweepEvents,
) -> tuple[Measurement, float]:
    count_mode = settings.measurement_mode == "count_windows"
    recorder.target = settings.window_requests if count_mode else 0
    windows: list[WindowSummary] = []
    throughputs: list[float] = []
    latencies: list[float] = []
    stable = False
    scraper = None
    if settings.collect_metrics:
        scraper = MetricsScraper(settings.metrics_url, settings.metrics_interval_ms / 1000)
        scraper.start()
    server_before = await stats.snapshot()
    recorder.cut()
    t_before, cpu_before = time.perf_counter(), time.process_time()
    window_s = settings.window_ms / 1000
    for trial in range(1, settings.max_trials + 1):
        if count_mode:
            await _wait_count(recorder, generator)
        else:
            await asyncio.sleep(window_s)
        records, delayed, dropped = recorder.cut()
        t_after, cpu_after = time.perf_counter(), time.process_time()
        if generator.failure is not None:
            raise TransportError(f"the load could not be kept up: {generator.failure}")
        server_after = await stats.snapshot()
        window = summarize(
            records,
            duration_s=t_after - t_before,
            server=_delta(server_after, server_before),
            delayed=delayed,
            dropped=dropped,
            client_cpu_s=cpu_after - cpu_before,
        )
        server_before, t_before, cpu_before = server_after, t_after, cpu_after
        windows.append(window)
        throughputs.append(window.throughput(settings.batch_size))
        latencies.append(window.latency_us(settings.judged_stat))
        stable = is_stable(throughputs, latencies, settings.stability_percent)
        if events.on_window:
            events.on_window(
                WindowReport(load, trial, window, throughputs[-1], latencies[-1], stable)
            )
        if window.client_cpu_fraction > CLIENT_BUSY_FRACTION and events.on_warning:
            events.on_warning(
                f"the load generator used {window.client_cpu_fraction:.0%} of a core in this "
                "window: it may be limiting the throughput measured"
            )
        if stable:
            break
    gpu = await scraper.stop() if scraper is not None else {}
    if scraper is not None and scraper.failures and events.on_warning:
        events.on_warning(
            f"{_load_text(settings, load)}: {scraper.failures} scrape(s) of {scraper.url} "
            "failed; is --metrics-url the server's metrics address?"
        )
    if not stable and events.on_warning:
        events.on_warning(
            f"{_load_text(settings, load)}: no {STABILITY_WINDOWS} windows agreed within "
            f"±{settings.stability_percent:g}% in {settings.max_trials} trials; reporting the "
            "last ones (longer windows, -p, or a larger -s help)"
        )
    merged = merge_windows(windows[-STABILITY_WINDOWS:])
    judged = merged.latency_us(settings.judged_stat)
    sends = merged.request_count + merged.errors + merged.dropped_sends
    late_share = merged.delayed_sends / sends if sends else 0.0
    if events.on_warning and (merged.dropped_sends or late_share > LATE_SHARE_WARNING):
        events.on_warning(
            f"{_load_text(settings, load)}: {merged.dropped_sends} sends dropped at "
            f"--max-in-flight {settings.max_in_flight}, {late_share:.0%} left over 1 ms late: "
            "the schedule was not kept (latencies count from the scheduled time)"
        )
    if settings.mode == "request_rate":
        point = merged.to_measurement(
            batch_size=settings.batch_size, request_rate=load, stable=stable
        )
    else:
        point = merged.to_measurement(
            batch_size=settings.batch_size, concurrency=int(load), stable=stable
        )
    if gpu:
        point = replace(point, extras={**point.extras, **gpu})
    return point, judged


async def _wait_count(recorder: Recorder, generator: LoadGenerator) -> None:
    while not recorder.full.is_set() and generator.failure is None:
        try:
            await asyncio.wait_for(recorder.full.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            continue


def _load_text(settings: PerfSettings, load: float) -> str:
    if settings.mode == "request_rate":
        return f"request rate {load:g}/s"
    return f"concurrency {int(load)}"


def command_line(settings: PerfSettings) -> str:
    """The perf_analyzer-style flags this sweep ran with, for the record."""
    s = settings
    parts = ["-m", s.model, "-u", s.url, "-i", s.protocol, "-b", str(s.batch_size)]
    if s.model_version:
        parts += ["-x", s.model_version]
    if s.request_rate is not None:
        r = s.request_rate
        parts += ["--request-rate-range", f"{r.start:g}:{r.end:g}:{r.step:g}"]
        parts += ["--request-distribution", s.distribution]
    else:
        c = s.concurrency
        parts += ["--concurrency-range", f"{int(c.start)}:{int(c.end)}:{int(c.step)}"]
    parts += ["-p", f"{s.window_ms:g}", "-r", str(s.max_trials), "-s", f"{s.stability_percent:g}"]
    if s.measurement_mode == "count_windows":
        parts += ["--measurement-mode", "count_windows"]
        parts += ["--measurement-request-count", str(s.window_requests)]
    if s.percentile is not None:
        parts.append(f"--percentile={s.percentile}")
    if s.latency_threshold_ms:
        parts += ["-l", f"{s.latency_threshold_ms:g}"]
    parts += ["--input-data", s.input_data]
    if s.shared_memory != "none":
        parts += ["--shared-memory", s.shared_memory]
        parts += ["--output-shared-memory-size", str(s.output_shared_memory_size)]
    for name, dims in s.shapes.items():
        parts += ["--shape", f"{name}:{','.join(map(str, dims))}"]
    return " ".join(parts)

"""Progress while a sweep runs and the summary table after it, with rich.

Progress is redrawn only when a window ends (no refresh thread): the display must cost the
load generator nothing between windows.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bertserve.perf.profiler import SweepEvents, WindowReport
from bertserve.perf.results import Measurement, Run
from bertserve.perf.settings import PerfSettings
from bertserve.tables import print_table

__all__ = ["SweepDisplay", "print_summary"]


def _load(m: Measurement) -> str:
    return str(m.concurrency) if m.concurrency is not None else f"{m.request_rate:g}/s"


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


class SweepDisplay:
    """A progress bar over the sweep's load levels and one line per finished point."""

    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} loads"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            transient=True,
        )
        self._task = self.progress.add_task("starting", total=1, visible=False)
        self._settings: PerfSettings | None = None
        self.warnings: list[str] = []

    def events(self) -> SweepEvents:
        return SweepEvents(
            on_start=self._start,
            on_window=self._window,
            on_point=self._point,
            on_warning=self._warning,
        )

    def __enter__(self) -> SweepDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _start(self, settings: PerfSettings, loads: list[float]) -> None:
        self._settings = settings
        self.progress.update(
            self._task, total=len(loads), visible=True, description=f"{settings.model}: warming up"
        )
        self.progress.refresh()

    def _window(self, report: WindowReport) -> None:
        settings = self._settings
        assert settings is not None
        unit = "" if settings.mode == "concurrency" else "/s"
        state = "stable" if report.stable else "measuring"
        line = (
            f"load {report.load:g}{unit} window {report.trial}/{settings.max_trials}: "
            f"{report.throughput:,.1f} infer/s, {settings.judged_stat} "
            f"{report.judged_latency_us / 1000:.2f} ms, client CPU "
            f"{report.window.client_cpu_fraction:.0%} ({state})"
        )
        if self.verbose:
            self.progress.console.print(f"  {line}", highlight=False, markup=False)
        self.progress.update(self._task, description=line)
        self.progress.refresh()

    def _point(self, m: Measurement) -> None:
        label = "Concurrency" if m.concurrency is not None else "Request rate"
        stable = "" if m.extras.get("stable", 1.0) else " [yellow](not stable)[/]"
        self.progress.console.print(
            f"{label}: {_load(m)}, throughput: {m.throughput:,.1f} infer/sec, latency "
            f"p50 {_ms(m.latency_p50_us)} ms, p99 {_ms(m.latency_p99_us)} ms{stable}",
            highlight=False,
        )
        self.progress.advance(self._task)
        self.progress.refresh()

    def _warning(self, message: str) -> None:
        self.warnings.append(message)
        self.progress.console.print(f"[yellow]warning:[/] {message}", highlight=False)


def print_summary(run: Run, console: Console) -> None:
    """The sweep as a table: load, throughput, latency percentiles and where the time went."""
    open_loop = run.mode == "request_rate"
    headers = [
        "load", "infer/s", "avg", "p50", "p90", "p95", "p99",
        "queue", "compute", "client CPU", "stable", "errors",
    ]  # fmt: skip
    if open_loop:
        headers += ["delayed", "dropped"]
    rows = []
    for m in run.measurements:
        compute = m.server_compute_input_us + m.server_compute_infer_us
        compute += m.server_compute_output_us
        row = [
            _load(m),
            f"{m.throughput:,.1f}",
            _ms(m.latency_avg_us),
            _ms(m.latency_p50_us),
            _ms(m.latency_p90_us),
            _ms(m.latency_p95_us),
            _ms(m.latency_p99_us),
            _ms(m.server_queue_us),
            _ms(compute),
            f"{m.extras.get('client_cpu_fraction', 0.0):.0%}",
            "yes" if m.extras.get("stable", 1.0) else "no",
            str(m.errors),
        ]
        if open_loop:
            row += [str(m.delayed_sends or 0), str(m.dropped_sends or 0)]
        rows.append(row)
    print_table(
        console,
        headers,
        rows,
        [h != "stable" for h in headers],
        title=f"{run.label}: {run.protocol.upper()} batch {run.batch_size} "
        f"({'request rate' if open_loop else 'concurrency'} sweep)",
        caption="latencies in ms per request; server columns are averages from the server's "
        "statistics",
    )

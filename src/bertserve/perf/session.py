"""One sweep from start to files: the event loop (uvloop when present), the progress display,
the summary table, and the CSV / JSON the settings ask for."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from bertserve.perf.display import SweepDisplay, print_summary
from bertserve.perf.profiler import profile
from bertserve.perf.results import Run, write_perf_analyzer_csv, write_run
from bertserve.perf.settings import PerfSettings

__all__ = ["measure", "run_async", "write_outputs"]

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a fresh event loop, uvloop's when installed (cheaper per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def write_outputs(run: Run, settings: PerfSettings) -> list[Path]:
    """perf_analyzer's CSV (`-f`) and the full JSON (`--json`), where asked; their paths."""
    written = []
    if settings.csv_path and run.measurements:
        write_perf_analyzer_csv(
            run.measurements,
            settings.csv_path,
            verbose=settings.verbose_csv,
            gpu_metrics=settings.collect_metrics,
        )
        written.append(Path(settings.csv_path))
    if settings.json_path:
        write_run(run, settings.json_path)
        written.append(Path(settings.json_path))
    return written


def measure(settings: PerfSettings, console: Console, *, summary: bool = True) -> Run:
    """Sweep with progress on `console`, print the summary table, write the files."""
    with SweepDisplay(console, verbose=settings.verbose) as display:
        result = run_async(profile(settings, display.events()))
    if summary:
        print_summary(result, console)
    for path in write_outputs(result, settings):
        console.print(f"wrote {path}", highlight=False)
    return result

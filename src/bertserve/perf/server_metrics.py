"""`--collect-metrics`: the server's Prometheus GPU metrics scraped while a load level is
measured, summarized per GPU as perf_analyzer's verbose CSV reports them (average
utilization and power, largest memory used, total memory)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections import defaultdict
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["GPU_COLUMNS", "MetricsScraper", "gpu_cells", "parse_gpu_cell"]

#: CSV column -> (Prometheus metric, how samples combine, the extras key prefix).
GPU_COLUMNS: dict[str, tuple[str, str, str]] = {
    "Avg GPU Utilization": ("nv_gpu_utilization", "mean", "gpu_utilization"),
    "Avg GPU Power Usage": ("nv_gpu_power_usage", "mean", "gpu_power_usage"),
    "Max GPU Memory Usage": ("nv_gpu_memory_used_bytes", "max", "gpu_memory_used_bytes"),
    "Total GPU Memory": ("nv_gpu_memory_total_bytes", "max", "gpu_memory_total_bytes"),
}


def _url(metrics_url: str) -> str:
    url = metrics_url if "://" in metrics_url else f"http://{metrics_url}"
    return url if url.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"


class MetricsScraper:
    """Scrapes `url` every `interval_s` between `start()` and `stop()`; `stop()` returns the
    summary as Measurement extras (`<prefix>:<gpu_uuid>` -> value)."""

    def __init__(self, metrics_url: str, interval_s: float) -> None:
        self.url = _url(metrics_url)
        self.interval_s = interval_s
        self._samples: dict[str, list[float]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def start(self) -> None:
        self._samples.clear()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._scrape()  # at least one reading, however short the level
        summary = {}
        for key, values in self._samples.items():
            prefix = key.split(":", 1)[0]
            how = next(h for _, h, p in GPU_COLUMNS.values() if p == prefix)
            summary[key] = max(values) if how == "max" else sum(values) / len(values)
        return summary

    async def _loop(self) -> None:
        while True:
            await self._scrape()
            await asyncio.sleep(self.interval_s)

    async def _scrape(self) -> None:
        try:
            text = await asyncio.to_thread(self._fetch)
        except OSError:
            self.failures += 1
            return
        wanted = {metric: prefix for metric, _, prefix in GPU_COLUMNS.values()}
        for family in text_string_to_metric_families(text):
            prefix = wanted.get(family.name)
            if prefix is None:
                continue
            for sample in family.samples:
                uuid = sample.labels.get("gpu_uuid", "")
                self._samples[f"{prefix}:{uuid}"].append(float(sample.value))

    def _fetch(self) -> str:
        with urllib.request.urlopen(self.url, timeout=5) as reply:
            return str(reply.read().decode("utf-8"))


def gpu_cells(extras: Mapping[str, float]) -> list[str]:
    """The four GPU columns of a verbose CSV row: "<uuid>:<value>;" per GPU, empty without
    GPU metrics (a CPU-only server)."""
    cells = []
    for _, _, prefix in GPU_COLUMNS.values():
        pairs = sorted(
            (key.split(":", 1)[1], value)
            for key, value in extras.items()
            if key.startswith(prefix + ":")
        )
        cells.append("".join(f"{uuid}:{value:g};" for uuid, value in pairs))
    return cells


def parse_gpu_cell(column: str, cell: str) -> dict[str, float]:
    """A verbose CSV's GPU cell back into extras; ValueError when it is not "uuid:value;"."""
    prefix = GPU_COLUMNS[column][2]
    found = {}
    for item in filter(None, (part.strip() for part in cell.split(";"))):
        uuid, sep, value = item.rpartition(":")
        if not sep:
            raise ValueError(f"{item!r} is not <gpu uuid>:<value>")
        found[f"{prefix}:{uuid}"] = float(value)
    return found

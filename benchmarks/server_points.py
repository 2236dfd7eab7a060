"""compare_servers.py's measurements: one server at one load, by perf_analyzer or by an asyncio
V2-JSON client, with the CPU it and the whole machine spent; and ONNX Runtime in-process, the
ceiling a server's throughput is compared with."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from bertserve.launch import ChildProcess
from bertserve.perf.analyzer import PerfAnalyzerFailed
from harness import perf_analyzer_args, perf_analyzer_point
from model_spec import ModelSpec, ort_session, sample_inputs

__all__ = ["Row", "Served", "in_process_throughput", "measure_json", "measure_perf_analyzer"]


@dataclass
class Row:
    server: str
    model: str
    client: str  # "perf_analyzer" or "json-asyncio"
    concurrency: int
    infer_per_sec: float | None
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_pct: float | None
    machine_cpu_pct: float | None = None  # every process: shows how busy the machine was
    avg_batch: float | None = None  # inferences per model execution (statistics endpoint)
    error: str = ""
    note: str = ""
    breakdown_us: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Served:
    """One server program serving one model on loopback."""

    kind: str  # bertserve, pytriton or mlserver
    spec: ModelSpec
    process: ChildProcess
    url: str  # host:port of its HTTP service

    def execution_counts(self) -> tuple[int, int] | None:
        """(inference_count, execution_count) from the Triton statistics endpoint."""
        if self.kind == "mlserver":
            return None
        url = f"http://{self.url}/v2/models/{self.spec.name}/stats"
        with urllib.request.urlopen(url, timeout=10) as response:
            stats = json.loads(response.read())["model_stats"]
        return (
            sum(int(v["inference_count"]) for v in stats),
            sum(int(v["execution_count"]) for v in stats),
        )

    def average_batch_since(self, before: tuple[int, int] | None) -> float | None:
        after = self.execution_counts()
        if before is None or after is None or after[1] == before[1]:
            return None
        return (after[0] - before[0]) / (after[1] - before[1])

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU seconds of `root` and all its descendants (from /proc)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(entry)
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot, summed over cores (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class _CpuMeter:
    """CPU % of the server's process tree and of the whole machine over a measurement."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.cpu0, self.busy0 = served.cpu_seconds(), machine_busy_seconds()
        self.t0 = time.monotonic()

    def fill(self, row: Row) -> None:
        elapsed = time.monotonic() - self.t0
        row.server_cpu_pct = 100 * (self.served.cpu_seconds() - self.cpu0) / elapsed
        row.machine_cpu_pct = 100 * (machine_busy_seconds() - self.busy0) / elapsed


def measure_perf_analyzer(served: Served, concurrency: int, opts: argparse.Namespace) -> Row:
    spec = served.spec
    row = Row(served.kind, spec.label, "perf_analyzer", concurrency, None, None, None, None)

    def args(stability: float) -> list[str]:
        return perf_analyzer_args(
            spec.name,
            served.url,
            concurrency=concurrency,
            window_ms=opts.window_ms,
            stability=stability,
            max_trials=opts.max_trials,
            shapes={t.name: t.dims for t in spec.inputs},
            seq_len=opts.seq_len,
            extra=["-i", "http"],
        )

    counts0 = served.execution_counts()
    meter = _CpuMeter(served)
    try:
        try:
            m = perf_analyzer_point(args(opts.stability))
        except PerfAnalyzerFailed as exc:
            if "stable measurement" not in exc.output:
                raise
            # Keep the point, flagged: accept the last windows whatever their spread.
            m = perf_analyzer_point(args(1000))
            row.note = f"unstable: windows differed by more than {opts.stability}%"
    except PerfAnalyzerFailed as exc:
        row.error = str(exc).splitlines()[-1]
        return row
    meter.fill(row)
    row.avg_batch = served.average_batch_since(counts0)
    row.infer_per_sec = m.throughput
    row.p50_ms, row.p99_ms = m.latency_p50_us / 1000, m.latency_p99_us / 1000
    row.breakdown_us = {
        "queue": m.server_queue_us,
        "compute_input": m.server_compute_input_us,
        "compute_infer": m.server_compute_infer_us,
        "compute_output": m.server_compute_output_us,
    }
    return row


async def _json_load(
    url: str, body: bytes, concurrency: int, warmup: float, duration: float
) -> tuple[int, list[float], int]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    start = time.monotonic()
    t_begin, t_end = start + warmup, start + warmup + duration
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal errors
            while True:
                sent = time.monotonic()
                if sent >= t_end:
                    return
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                done = time.monotonic()
                if t_begin <= done <= t_end:  # completions inside the window count
                    if ok:
                        latencies.append(done - sent)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def measure_json(served: Served, concurrency: int, opts: argparse.Namespace) -> Row:
    spec = served.spec
    row = Row(served.kind, spec.label, "json-asyncio", concurrency, None, None, None, None)
    arrays = sample_inputs(spec, 1, opts.seq_len)
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": t.name,
                    "shape": list(arrays[t.name].shape),
                    "datatype": t.datatype,
                    "data": arrays[t.name].ravel().tolist(),
                }
                for t in spec.inputs
            ]
        }
    ).encode()
    url = f"http://{served.url}/v2/models/{spec.name}/infer"
    warmup, duration = opts.window_ms / 1000, 3 * opts.window_ms / 1000
    meter = _CpuMeter(served)
    count, latencies, errors = asyncio.run(_json_load(url, body, concurrency, warmup, duration))
    meter.fill(row)
    if errors or len(latencies) < 2:
        row.error = f"{errors} failed requests, {count} succeeded"
        return row
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    row.infer_per_sec = count / duration
    row.p50_ms, row.p99_ms = cuts[49] * 1000, cuts[98] * 1000
    return row


def in_process_throughput(
    spec: ModelSpec, batch: int, opts: argparse.Namespace
) -> tuple[float, str]:
    """Inferences/s of ONNX Runtime called directly, back to back, at a fixed batch size.

    The best of: one session using every core (threads spinning, ORT's default, or not), and
    the config's instances as parallel sessions with bertserve's options. No server, no
    client: the ceiling a server's throughput is compared with.
    """
    cores = os.cpu_count() or 1
    candidates = [
        (
            _parallel_throughput(
                replace(spec, intra_op_threads=cores, allow_spinning=spin), 1, batch, opts
            ),
            f"1 session x {cores} threads, spinning {spin}",
        )
        for spin in ("1", "0")
    ]
    if spec.instances > 1:
        rate = _parallel_throughput(spec, spec.instances, batch, opts)
        candidates.append(
            (rate, f"{spec.instances} sessions x {spec.intra_op_threads} threads in parallel")
        )
    return max(candidates)


def _parallel_throughput(
    spec: ModelSpec, sessions: int, batch: int, opts: argparse.Namespace
) -> float:
    """`sessions` ORT sessions, each looping on its own thread (ORT releases the GIL)."""
    feeds = sample_inputs(spec, batch, opts.seq_len)
    names = [t.name for t in spec.outputs]
    runners = [ort_session(spec) for _ in range(sessions)]
    for session in runners:
        session.run(names, feeds)
    duration = 2 * opts.window_ms / 1000
    counts = [0] * sessions
    start = time.perf_counter()

    def loop(i: int) -> None:
        while time.perf_counter() - start < duration:
            runners[i].run(names, feeds)
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return batch * sum(counts) / (time.perf_counter() - start)

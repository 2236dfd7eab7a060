"""Serve one ONNX model from bertserve, PyTriton and MLServer, and measure them in one run.

bertserve and PyTriton (a real tritonserver in front of a Python function running ONNX
Runtime) speak Triton's protocol, so the real perf_analyzer drives both over HTTP with the
same settings. MLServer offers neither Triton's binary-tensor extension nor the model-config
endpoint that perf_analyzer needs, so a small asyncio client sending V2 JSON drives it; that
client also measures the other two, so the MLServer rows have something to compare with.
Every model runs with the batching its config.pbtxt gives (max_batch_size, queue delay,
preferred sizes) and ONNX Runtime with the same session options bertserve uses.

PyTriton and MLServer live in their own venvs (their pins conflict with ours):

    python3 -m venv .venv-bench-pytriton && .venv-bench-pytriton/bin/pip install \
        nvidia-pytriton onnxruntime numpy
    python3 -m venv .venv-bench-mlserver && .venv-bench-mlserver/bin/pip install \
        mlserver onnxruntime numpy 'uvloop<0.22'

(uvloop 0.22+ no longer makes a loop in get_event_loop(), which MLServer 1.7's worker
processes call: with a newer uvloop its parallel workers die at start.)

Run from the main venv (it needs perf_analyzer: scripts/install_perf_analyzer.sh):

    python benchmarks/compare_servers.py --repo tiny=REPO_DIR --repo bert-base=REPO_DIR

Each REPO_DIR is a Triton model repository holding one model (`bertserve build`). This file
is also the entry point of the PyTriton and MLServer processes (`_serve-pytriton`,
`_serve-mlserver`), run by those venvs' interpreters: keep module-level imports stdlib-only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ("bertserve", "pytriton", "mlserver")
VENVS = {"pytriton": ROOT / ".venv-bench-pytriton", "mlserver": ROOT / ".venv-bench-mlserver"}
# ONNX Runtime tensor types -> (numpy dtype, KServe datatype)
ORT_TYPES = {
    "tensor(int64)": ("int64", "INT64"),
    "tensor(int32)": ("int32", "INT32"),
    "tensor(float)": ("float32", "FP32"),
    "tensor(float16)": ("float16", "FP16"),
    "tensor(bool)": ("bool", "BOOL"),
}


# --------------------------------------------------------------------------- model spec


@dataclass
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name
    datatype: str  # KServe datatype
    dims: list[int]  # without the batch dimension; -1 = variable


@dataclass
class ModelSpec:
    """What every server needs to serve the model the same way."""

    label: str
    repo: str
    name: str
    model_file: str
    max_batch_size: int
    delay_us: int
    preferred: list[int]
    instances: int
    intra_op_threads: int
    allow_spinning: str
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    random_weights: bool = False

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        data = json.loads(text)
        data["inputs"] = [TensorInfo(**t) for t in data["inputs"]]
        data["outputs"] = [TensorInfo(**t) for t in data["outputs"]]
        return cls(**data)


def load_spec(label: str, repo: Path) -> ModelSpec:
    """Read <repo>/<model>/config.pbtxt and the ONNX graph of its newest version."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    models = sorted(p for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    if len(models) != 1:
        raise SystemExit(f"{repo}: expected one model directory with a config.pbtxt")
    model_dir = models[0]
    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
    model_file = model_dir / str(versions[-1]) / (config.default_model_filename or "model.onnx")
    batching = config.dynamic_batching
    instances = sum(max(g.count, 1) for g in config.instance_group) or 1
    threads_param = config.parameters.get("intra_op_thread_count")
    threads = (
        int(threads_param.string_value)
        if threads_param is not None and threads_param.string_value
        else max(1, (os.cpu_count() or 1) // instances)  # bertserve's default
    )
    inputs, outputs = _graph_io(model_file, batched=config.max_batch_size > 0)
    weights = config.parameters.get("weights")
    spinning = config.parameters.get("allow_spinning")
    return ModelSpec(
        label=label,
        repo=str(repo),
        name=config.name or model_dir.name,
        model_file=str(model_file),
        max_batch_size=config.max_batch_size,
        delay_us=batching.max_queue_delay_microseconds,
        preferred=list(batching.preferred_batch_size),
        instances=instances,
        intra_op_threads=threads,
        allow_spinning=spinning.string_value if spinning is not None else "0",  # as bertserve
        inputs=inputs,
        outputs=outputs,
        random_weights=weights is not None and weights.string_value == "random",
    )


def _graph_io(model_file: Path, *, batched: bool) -> tuple[list[TensorInfo], list[TensorInfo]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])

    def info(args: list[Any]) -> list[TensorInfo]:
        out = []
        for a in args:
            dtype, datatype = ORT_TYPES[a.type]
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in a.shape]
            out.append(TensorInfo(a.name, dtype, datatype, dims[1:] if batched else dims))
        return out

    return info(session.get_inputs()), info(session.get_outputs())


def ort_session(spec: ModelSpec) -> Any:
    """An ONNX Runtime session with the options bertserve's backend sets."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", spec.allow_spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spec.allow_spinning)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(spec.model_file, options, providers=["CPUExecutionProvider"])


def sample_inputs(spec: ModelSpec, batch: int, seq_len: int) -> dict[str, Any]:
    """Zeros (token id 0, as perf_analyzer's --input-data zero sends), variable dims = seq_len."""
    import numpy as np

    return {
        t.name: np.zeros([batch, *[seq_len if d < 0 else d for d in t.dims]], dtype=t.dtype)
        for t in spec.inputs
    }


# --------------------------------------------------------------------------- the servers


def serve_pytriton(spec: ModelSpec, ports: dict[str, int]) -> None:
    import sysconfig

    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    # tritonserver's Python-backend stub links libpython3.X.so; without this it may load the
    # system's copy (another patch release) beside this interpreter's stdlib, and fail.
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p
    )
    names = [t.name for t in spec.outputs]

    def instance() -> Any:
        session = ort_session(spec)

        @batch
        def infer(**inputs: Any) -> dict[str, Any]:
            return dict(zip(names, session.run(names, inputs), strict=True))

        return infer

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=ports["http"],
        grpc_address="127.0.0.1",
        grpc_port=ports["grpc"],
        metrics_address="127.0.0.1",
        metrics_port=ports["metrics"],
    )
    # perf_analyzer reads the statistics endpoint, which PyTriton restricts by default.
    security = TritonSecurityConfig(restricted_endpoints=[])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=spec.name,
            infer_func=[instance() for _ in range(spec.instances)],  # one per instance
            inputs=[
                Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=tuple(t.dims))
                for t in spec.inputs
            ],
            outputs=[
                Tensor(name=t.name, dtype=np.dtype(t.dtype), shape=tuple(t.dims))
                for t in spec.outputs
            ],
            config=ModelConfig(
                max_batch_size=spec.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=spec.delay_us,
                    preferred_batch_size=spec.preferred or None,
                ),
            ),
        )
        triton.serve()


def serve_mlserver(spec: ModelSpec, ports: dict[str, int]) -> None:
    from mlserver import MLServer
    from mlserver.settings import ModelParameters, ModelSettings, Settings
    from mlserver.utils import install_uvloop_event_loop

    # One model instance per worker process, like the config's instance count; with one,
    # inference runs in the server process (ONNX Runtime releases the GIL), saving a hop.
    # Workers import the runtime class by path, so this folder goes on their PYTHONPATH.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = ":".join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, here)
    settings = Settings(
        host="127.0.0.1",
        http_port=ports["http"],
        grpc_port=ports["grpc"],
        metrics_port=ports["metrics"],
        parallel_workers=spec.instances if spec.instances > 1 else 0,
        metrics_dir=tempfile.mkdtemp(prefix="mlserver-metrics-"),  # else ./.metrics
        environments_dir=tempfile.mkdtemp(prefix="mlserver-envs-"),  # else ./.envs
        debug=False,
    )
    model = ModelSettings(
        name=spec.name,
        implementation="compare_servers.OnnxModel",
        max_batch_size=spec.max_batch_size,
        max_batch_time=spec.delay_us / 1e6,
        parameters=ModelParameters(extra={"spec": json.dumps(asdict(spec))}),
    )

    async def serve() -> None:  # MLServer() with workers needs a running event loop
        await MLServer(settings).start([model])

    install_uvloop_event_loop()  # as `mlserver start` does; its workers expect it
    asyncio.run(serve())


@functools.cache
def _mlserver_runtime() -> type:
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse

    class OnnxModel(MLModel):  # type: ignore[misc]
        async def load(self) -> bool:
            spec = ModelSpec.from_json(self.settings.parameters.extra["spec"])
            self._session = ort_session(spec)
            self._names = [t.name for t in spec.outputs]
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
            results = self._session.run(self._names, feeds)
            return InferenceResponse(
                model_name=self.name,
                outputs=[
                    NumpyCodec.encode_output(n, r)
                    for n, r in zip(self._names, results, strict=True)
                ],
            )

    OnnxModel.__module__, OnnxModel.__qualname__ = __name__, "OnnxModel"
    return OnnxModel


def __getattr__(name: str) -> Any:
    # MLServer imports its runtime as "compare_servers.OnnxModel"; built on first use so
    # that this module imports without mlserver installed.
    if name == "OnnxModel":
        return _mlserver_runtime()
    raise AttributeError(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One server process (and its children) serving one model on loopback."""

    def __init__(self, kind: str, spec: ModelSpec, log_dir: Path, bertserve_args: list[str]):
        self.kind = kind
        self.spec = spec
        self.ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
        self.log = log_dir / f"{kind}-{spec.label}.log"
        if kind == "bertserve":
            command = [
                sys.executable,
                "-m",
                "bertserve",
                "serve",
                "--model-repository",
                spec.repo,
                "--host",
                "127.0.0.1",
                "--http-port",
                str(self.ports["http"]),
                "--grpc-port",
                str(self.ports["grpc"]),
                "--metrics-port",
                str(self.ports["metrics"]),
                *bertserve_args,
            ]
        else:
            python = VENVS[kind] / "bin" / "python"
            if not python.exists():
                raise SystemExit(f"{python} missing: see this script's docstring")
            spec_json = json.dumps(asdict(spec))
            command = [str(python), __file__, f"_serve-{kind}", spec_json, json.dumps(self.ports)]
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    def __enter__(self) -> Server:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 300
        paths = ["/v2/health/ready", f"/v2/models/{self.spec.name}/ready"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode}; see {self.log}"
                )
            if all(_http_ok(f"http://{self.url}{p}") for p in paths):
                return self
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"{self.kind} not ready in 300 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGTERM, not SIGINT: a process started in the background ignores SIGINT. The
        # group holds PyTriton's tritonserver and MLServer's workers too.
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

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
        assert self.proc is not None
        return tree_cpu_seconds(self.proc.pid)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


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


# --------------------------------------------------------------------------- measuring


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


def perf_analyzer_args(
    spec: ModelSpec, url: str, concurrency: int, opts: argparse.Namespace
) -> list[str]:
    args = [
        "-m",
        spec.name,
        "-u",
        url,
        "-i",
        "http",
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--measurement-interval",
        str(opts.window_ms),
        "--stability-percentage",
        str(opts.stability),
        "--max-trials",
        str(opts.max_trials),
        "--input-data",
        "zero",
    ]
    for t in spec.inputs:
        if any(d < 0 for d in t.dims):
            shape = ",".join(str(opts.seq_len if d < 0 else d) for d in t.dims)
            args += ["--shape", f"{t.name}:{shape}"]
    return args


def measure_perf_analyzer(server: Server, concurrency: int, opts: argparse.Namespace) -> Row:
    from bertserve.perf.analyzer import PerfAnalyzerFailed, profile

    spec = server.spec
    row = Row(server.kind, spec.label, "perf_analyzer", concurrency, None, None, None, None)
    args = perf_analyzer_args(spec, server.url, concurrency, opts)
    counts0 = server.execution_counts()
    cpu0, busy0, t0 = server.cpu_seconds(), machine_busy_seconds(), time.monotonic()
    try:
        try:
            (m,) = profile(args, timeout=600)
        except PerfAnalyzerFailed as exc:
            if "stable measurement" not in exc.output:
                raise
            # Keep the point, flagged: accept the last windows whatever their spread.
            i = args.index("--stability-percentage")
            (m,) = profile([*args[: i + 1], "1000", *args[i + 2 :]], timeout=600)
            row.note = f"unstable: windows differed by more than {opts.stability}%"
    except PerfAnalyzerFailed as exc:
        row.error = str(exc).splitlines()[-1]
        return row
    elapsed = time.monotonic() - t0
    row.server_cpu_pct = 100 * (server.cpu_seconds() - cpu0) / elapsed
    row.machine_cpu_pct = 100 * (machine_busy_seconds() - busy0) / elapsed
    row.avg_batch = server.average_batch_since(counts0)
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


def measure_json(server: Server, concurrency: int, opts: argparse.Namespace) -> Row:
    spec = server.spec
    row = Row(server.kind, spec.label, "json-asyncio", concurrency, None, None, None, None)
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
    url = f"http://{server.url}/v2/models/{spec.name}/infer"
    warmup, duration = opts.window_ms / 1000, 3 * opts.window_ms / 1000
    cpu0, busy0, t0 = server.cpu_seconds(), machine_busy_seconds(), time.monotonic()
    count, latencies, errors = asyncio.run(_json_load(url, body, concurrency, warmup, duration))
    elapsed = time.monotonic() - t0
    row.server_cpu_pct = 100 * (server.cpu_seconds() - cpu0) / elapsed
    row.machine_cpu_pct = 100 * (machine_busy_seconds() - busy0) / elapsed
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
    import threading

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


# --------------------------------------------------------------------------- report


def median_rows(rows: list[Row]) -> list[Row]:
    """Per (server, model, client, concurrency): the round with the median throughput."""
    groups: dict[tuple[str, str, str, int], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.server, r.model, r.client, r.concurrency)].append(r)
    out = []
    for group in groups.values():
        ok = sorted((r for r in group if r.infer_per_sec is not None), key=_throughput)
        if not ok:
            out.append(group[-1])
            continue
        chosen = ok[(len(ok) - 1) // 2]
        if len(group) > 1:
            rates = ", ".join(f"{_throughput(r):,.1f}" for r in group if r.infer_per_sec)
            notes = [chosen.note, f"median of rounds: {rates}/s"]
            if len(group) > len(ok):
                notes.append(f"{len(group) - len(ok)} round(s) failed")
            chosen.note = "; ".join(n for n in notes if n)
        out.append(chosen)
    return out


def _throughput(r: Row) -> float:
    return r.infer_per_sec or 0.0


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(rows: list[Row], *, header: bool = True) -> None:
    title = (
        f"{'server':<10} {'model':<10} {'client':<14} {'conc':>4} {'inf/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'srv CPU %':>9} {'all CPU %':>9} {'batch':>5}"
    )
    if header:
        print(title)
        print("-" * len(title))
    for r in rows:
        print(
            f"{r.server:<10} {r.model:<10} {r.client:<14} {r.concurrency:>4} "
            f"{fmt(r.infer_per_sec):>9} {fmt(r.p50_ms, 2):>8} {fmt(r.p99_ms, 2):>8} "
            f"{fmt(r.server_cpu_pct, 0):>9} {fmt(r.machine_cpu_pct, 0):>9} {fmt(r.avg_batch, 2):>5}"
            + (f"  ERROR: {r.error}" if r.error else "")
            + (f"  ({r.note})" if r.note else ""),
            flush=True,
        )


def ratios(
    rows: list[Row], specs: list[ModelSpec], baseline: dict[str, dict[int, float]]
) -> list[dict[str, Any]]:
    """bertserve / PyTriton per concurrency (perf_analyzer rows), and bertserve / in-process."""
    by_key = {(r.server, r.model, r.client, r.concurrency): r for r in rows}
    out: list[dict[str, Any]] = []
    for spec in specs:
        for (server, model, client, c), r in sorted(by_key.items()):
            if server != "bertserve" or model != spec.label or client != "perf_analyzer":
                continue
            if r.infer_per_sec is None or r.p99_ms is None:
                continue
            item: dict[str, Any] = {"model": model, "concurrency": c}
            other = by_key.get(("pytriton", model, client, c))
            if other and other.infer_per_sec and other.p99_ms is not None:
                item["vs_pytriton_throughput"] = r.infer_per_sec / other.infer_per_sec
                item["p99_ms_bertserve_vs_pytriton"] = [r.p99_ms, other.p99_ms]
            batch = min(c, spec.max_batch_size or 1)
            if batch in baseline.get(model, {}):
                item["in_process_batch"] = batch
                item["in_process_inf_s"] = baseline[model][batch]
                item["vs_in_process"] = r.infer_per_sec / baseline[model][batch]
            if r.avg_batch is not None and baseline.get(model):
                # The batches the server actually ran (its preferred sizes may keep them small).
                near = min(baseline[model], key=lambda b: abs(b - r.avg_batch))  # type: ignore[operator]
                item["server_avg_batch"] = r.avg_batch
                item["in_process_batch_nearest"] = near
                item["vs_in_process_nearest"] = r.infer_per_sec / baseline[model][near]
            out.append(item)
    return out


def print_ratios(items: list[dict[str, Any]]) -> None:
    print(
        "\nbertserve vs PyTriton (perf_analyzer, same concurrency) and vs ONNX Runtime in-process"
    )
    print("(same batch size = min(concurrency, max_batch_size)):")
    for it in items:
        label = f"{it['model']:<10} c={it['concurrency']:<3} "
        parts = []
        if "vs_pytriton_throughput" in it:
            a, b = it["p99_ms_bertserve_vs_pytriton"]
            verdict = "p99 <= PyTriton" if a <= b else "p99 HIGHER than PyTriton"
            parts.append(
                f"throughput x{it['vs_pytriton_throughput']:.2f} of PyTriton, "
                f"p99 {a:.2f} vs {b:.2f} ms ({verdict})"
            )
        if "vs_in_process" in it:
            parts.append(
                f"{100 * it['vs_in_process']:.0f}% of in-process ORT "
                f"at batch {it['in_process_batch']} ({it['in_process_inf_s']:,.1f}/s)"
            )
        if "vs_in_process_nearest" in it:
            parts.append(
                f"server's mean batch {it['server_avg_batch']:.2f}: "
                f"{100 * it['vs_in_process_nearest']:.0f}% of in-process ORT "
                f"at batch {it['in_process_batch_nearest']}"
            )
        print("  " + label + "; ".join(parts))


def machine_info() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    cpu = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lscpu.splitlines())}
    return {
        "cpu": cpu.get("Model name", platform.processor()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"bertserve": version("bertserve"), "onnxruntime": version("onnxruntime")}
    for kind, venv in VENVS.items():
        package = "nvidia-pytriton" if kind == "pytriton" else "mlserver"
        probe = f"from importlib.metadata import version; print(version('{package}'))"
        python = venv / "bin" / "python"
        if python.exists():
            done = subprocess.run(
                [str(python), "-c", probe], capture_output=True, text=True, check=False
            )
            out[package] = done.stdout.strip() or "?"
    from bertserve.perf.analyzer import run_perf_analyzer

    done = run_perf_analyzer(["--version"], timeout=30)
    out["perf_analyzer"] = (done.stdout + done.stderr).strip() + " (tritonclient 2.50.0 wheel)"
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--repo",
        action="append",
        required=True,
        metavar="LABEL=DIR",
        help="a model repository holding one model; repeat for several",
    )
    p.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated subset of %(default)s"
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat the sweep; report the median")
    p.add_argument("--concurrency", default="1,2,4,8,16", help="levels, comma-separated")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (variable dims)")
    p.add_argument(
        "--window-ms", type=int, default=2000, help="perf_analyzer -p; json client window"
    )
    p.add_argument("--stability", type=int, default=10, help="perf_analyzer -s (percent)")
    p.add_argument("--max-trials", type=int, default=10, help="perf_analyzer -r")
    p.add_argument(
        "--json-client",
        choices=("all", "mlserver"),
        default="all",
        help="which servers the asyncio JSON client also measures",
    )
    p.add_argument(
        "--bertserve-args", default="", help="extra `bertserve serve` flags (one string)"
    )
    p.add_argument("--output", type=Path, default=None, help="JSON results file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # Stop the servers on SIGTERM too (SystemExit unwinds the ExitStack that holds them).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    servers = [s for s in opts.servers.split(",") if s]
    levels = [int(c) for c in opts.concurrency.split(",")]
    specs = [
        load_spec(label, Path(d).resolve()) for label, _, d in (r.partition("=") for r in opts.repo)
    ]
    log_dir = Path(tempfile.mkdtemp(prefix="compare-servers-"))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    print(
        f"logs: {log_dir}; seq_len {opts.seq_len}; perf_analyzer -p {opts.window_ms} "
        f"-s {opts.stability} -r {opts.max_trials} --input-data zero; HTTP on 127.0.0.1",
        flush=True,
    )
    for spec in specs:
        weights = "RANDOM weights (speed only)" if spec.random_weights else "weights as built"
        print(
            f"model {spec.label}: {spec.name} max_batch_size {spec.max_batch_size}, "
            f"queue delay {spec.delay_us} us, preferred {spec.preferred or '-'}, "
            f"{spec.instances} instance(s), ORT intra-op threads {spec.intra_op_threads}, "
            f"spinning {spec.allow_spinning}, "
            f"{weights}",
            flush=True,
        )

    # In-process ORT runs in the same rotation as the servers, once per batch size a round.
    in_process: dict[str, dict[int, list[tuple[float, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    every: list[Row] = []
    for spec in specs:
        with contextlib.ExitStack() as stack:
            running: list[Server] = []
            for kind in servers:  # all up at once (idle, each takes < 1% CPU) ...
                try:
                    server = Server(kind, spec, log_dir, shlex.split(opts.bertserve_args))
                    running.append(stack.enter_context(server))
                except RuntimeError as exc:
                    print(f"{kind} on {spec.label}: {exc}", flush=True)
                    every.append(
                        Row(kind, spec.label, "-", 0, None, None, None, None, error=str(exc))
                    )
            # ... so that each load level measures every server in turn, in an order that
            # rotates, and whatever else loads the machine falls on all of them alike.
            for round_ in range(opts.rounds):
                for i, c in enumerate(levels):
                    shift = (i + round_) % max(len(running), 1)
                    for server in running[shift:] + running[:shift]:
                        if server.kind != "mlserver":
                            every.append(measure_perf_analyzer(server, c, opts))
                            print_table(every[-1:], header=False)
                        if server.kind == "mlserver" or opts.json_client == "all":
                            every.append(measure_json(server, c, opts))
                            print_table(every[-1:], header=False)
                    batch = min(c, spec.max_batch_size or 1)
                    runs = in_process[spec.label][batch]
                    if len(runs) <= round_:
                        runs.append(in_process_throughput(spec, batch, opts))
                        rate, how = runs[-1]
                        print(f"ORT in-process {spec.label} batch {batch}: {rate:,.1f} inf/s "
                              f"({how})", flush=True)  # fmt: skip

    rows = median_rows(every)
    baseline = {
        model: {b: statistics.median(rate for rate, _ in runs) for b, runs in by_batch.items()}
        for model, by_batch in in_process.items()
    }
    rows.sort(key=lambda r: (r.model, r.client, r.server, r.concurrency))
    print("\n== results (inferences = sequences of", opts.seq_len, "tokens) ==")
    print_table(rows)
    compared = ratios(rows, specs, baseline)
    print_ratios(compared)
    print(
        "\nperf_analyzer drives bertserve and PyTriton (HTTP, binary tensors). MLServer lacks"
        " Triton's binary extension and config endpoint, so it is driven only by the"
        " json-asyncio client (V2 JSON), which also ran against the others for comparison."
        " Client and servers share this machine's cores. CPU %: 100 = one core busy;"
        f" this machine has {os.cpu_count()} cores. 'srv' counts the server's process tree,"
        " 'all' every process on the machine (client and anything else running)."
    )
    result = {
        "date": started,
        "machine": machine_info(),
        "versions": versions(),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "models": [asdict(s) for s in specs],
        "in_process_ort": {
            model: {b: {"median": baseline[model][b], "runs": runs} for b, runs in by_batch.items()}
            for model, by_batch in in_process.items()
        },
        "rows": [asdict(r) for r in rows],
        "ratios": compared,
    }
    output = opts.output or log_dir / "compare_servers.json"
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {output}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_serve-pytriton", "_serve-mlserver"):
        spec, ports = ModelSpec.from_json(sys.argv[2]), json.loads(sys.argv[3])
        (serve_pytriton if sys.argv[1] == "_serve-pytriton" else serve_mlserver)(spec, ports)
    else:
        sys.exit(main())

"""Server stages of the GPU benchmark: `bertserve serve` processes measured by the real
perf_analyzer, with the CPU each process (and each of its threads) spent per request.

Topologies: one server on one GPU; one server feeding two GPUs (`instance_group gpus`); one
server process per GPU behind a local nginx (the front ends in parallel, one engine each).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertserve.launch import ServerProcess
from gpu_common import Results, Target, realistic_rows
from harness import perf_analyzer_point
from squad_workload import to_perf_analyzer

__all__ = [
    "ModelSpec",
    "Nginx",
    "Point",
    "measure",
    "qa_windows_file",
    "start_server",
    "thread_cpu",
    "workload_files",
    "write_repository",
]

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a benchmark repository (all share one BERT checkpoint)."""

    precision: str
    packed: bool
    max_batch: int = 256
    instances: int = 2
    gpus: tuple[int, ...] = ()
    max_tokens: int = 32768
    delay_us: int = 0

    def config(self, name: str, kind: str) -> str:
        params = {"precision": self.precision, "gelu": "tanh", "seq_buckets": "384"}
        if self.packed:
            params.update(packing="true", max_tokens=str(self.max_tokens))
        else:
            params["batch_buckets"] = "1,4,16,64,128,256"
        preferred = "" if self.packed else "preferred_batch_size: [64, 128, 256] "
        gpus = f"gpus: [{', '.join(map(str, self.gpus))}] " if self.gpus else ""
        text = (
            f'name: "{name}"\nbackend: "bertserve_torch"\nmax_batch_size: {self.max_batch}\n'
            f"dynamic_batching {{ {preferred}max_queue_delay_microseconds: {self.delay_us} }}\n"
            f"instance_group {{ count: {self.instances} kind: {kind} {gpus}}}\n"
        )
        for k, v in params.items():
            text += f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n'
        return text


def write_repository(
    root: Path, ckpt: Path, models: Mapping[str, ModelSpec], target: Target,
    qa: Mapping[str, str] | None = None,
    qa_shapes: Mapping[str, tuple[int, int]] | None = None,
) -> Path:  # fmt: skip
    """A repository of `models` over the checkpoint in `ckpt` (linked, not copied), and QA
    pipelines (`qa`: pipeline name -> QA model name) with a generated tokenizer; each
    pipeline has 8 instances of batches of 64 pairs unless `qa_shapes` gives it another
    (instances, pairs a batch)."""
    from google.protobuf import text_format

    from bertserve.backends.qa_pipeline import pipeline_config
    from bertserve.builder.vocabulary import write_generated_tokenizer

    if root.exists():
        shutil.rmtree(root)
    for name, spec in models.items():
        vdir = root / name / "1"
        vdir.mkdir(parents=True)
        for f in ("model.safetensors", "config.json"):
            (vdir / f).symlink_to(ckpt / f)
        (root / name / "config.pbtxt").write_text(spec.config(name, target.kind))
    for pipeline, qa_model in (qa or {}).items():
        tokenizer = root / qa_model / "1" / "tokenizer"
        if not tokenizer.exists():
            write_generated_tokenizer(tokenizer, target.vocab, 384)
        instances, pairs = (qa_shapes or {}).get(pipeline, (8, 64))
        config = pipeline_config(
            pipeline, qa_model, {"max_windows_per_call": "64"},
            max_batch_size=pairs, instances=instances, max_queue_delay_us=2000,
        )  # fmt: skip
        (root / pipeline / "1").mkdir(parents=True)
        (root / pipeline / "config.pbtxt").write_text(text_format.MessageToString(config))
    return root


def workload_files(work: Path, rows: int) -> dict[str, Path]:
    """perf_analyzer data: the SQuAD-like mix padded to 384 with masks (`mix`), the same rows
    each at its own length (`own`), and full 384-token rows (`full`)."""
    mix = realistic_rows(rows, seed=0)
    own = [{k: v[: int(r["attention_mask"].sum())] for k, v in r.items()} for r in mix]
    full = [dict(r, attention_mask=r["attention_mask"] * 0 + 1) for r in mix[:64]]
    paths = {}
    for name, data in (("mix", mix), ("own", own), ("full", full)):
        paths[name] = work / f"pa-{name}.json"
        paths[name].write_text(json.dumps(to_perf_analyzer(data, list(INPUTS))))
    return paths


def qa_windows_file(repo: Path, qa_model: str, work: Path) -> tuple[Path, int, int]:
    """The windows the QA pipeline makes of perf_analyzer's bundled text sample, as model
    input (padded to 384 with masks): (file, pairs, windows)."""
    from bertserve.qa.windows import Windower, WindowSettings

    sample = Path(__file__).resolve().parents[1] / "src/bertserve/data/qa_perf_input.json"
    data = json.loads(sample.read_text())["data"]
    questions = [d["question"]["content"][0] for d in data]
    contexts = [d["context"]["content"][0] for d in data]
    tokenizer = repo / qa_model / "1" / "tokenizer" / "tokenizer.json"
    windows = Windower.from_file(tokenizer, WindowSettings()).split(questions, contexts)
    rows = []
    for w in windows:
        n = len(w)
        row = {k: [0] * 384 for k in INPUTS}
        row["input_ids"][:n] = w.input_ids.tolist()
        row["token_type_ids"][:n] = w.token_type_ids.tolist()
        row["attention_mask"][:n] = [1] * n
        rows.append({k: {"content": v, "shape": [384]} for k, v in row.items()})
    path = work / "pa-qa-windows.json"
    path.write_text(json.dumps({"data": rows}))
    return path, len(questions), len(windows)


def start_server(
    repo: Path, log: Path, env: Mapping[str, str] | None = None,
    pythonpath: Sequence[Path] = (), ready: bool = True, args: Sequence[str] = (),
) -> ServerProcess:  # fmt: skip
    """`bertserve serve` over `repo` on free ports (bertserve.launch), ready; `env` adds to
    this process's environment (CUDA_VISIBLE_DEVICES for one server per GPU); `pythonpath`
    serves another build (its `src/` first); `args` are more `serve` flags; `ready=False`
    returns it unstarted."""
    server = ServerProcess(
        repo, args=list(args), env={**os.environ, **(env or {})}, log=log,
        pythonpath=pythonpath, ready_timeout=300,
    )  # fmt: skip
    return server.start() if ready else server


class Nginx:
    """A local nginx (Debian's package unpacked by the caller) balancing HTTP/1.1 keep-alive
    connections over `upstreams` (host:port), least connections first."""

    def __init__(self, binary: str, upstreams: Sequence[str], work: Path, workers: int) -> None:
        import socket

        work.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        servers = "".join(f"    server {u};\n" for u in upstreams)
        temp = " ".join(
            f"{k}_temp_path {work}/{k};"
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (work / "nginx.conf").write_text(
            f"worker_processes {workers};\npid {work}/nginx.pid;\nerror_log stderr warn;\n"
            "events { worker_connections 8192; }\n"
            f"http {{\n  access_log off;\n  {temp}\n"
            f"  upstream bertserve {{\n    least_conn;\n{servers}    keepalive 512;\n  }}\n"
            f"  server {{\n    listen 127.0.0.1:{self.port} reuseport;\n"
            "    client_max_body_size 0;\n    keepalive_requests 1000000;\n"
            "    location / {\n      proxy_pass http://bertserve;\n"
            '      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n'
            "      proxy_buffering off;\n      proxy_request_buffering off;\n    }\n  }\n}\n"
        )
        self.log = (work / "nginx.log").open("w")
        self.proc = subprocess.Popen(
            [binary, "-p", str(work), "-c", str(work / "nginx.conf"), "-e", "stderr",
             "-g", "daemon off;"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        time.sleep(0.5)
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {self.proc.returncode}; see {work}/nginx.log")

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return out


def thread_cpu(pids: Sequence[int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of every thread of `pids` and their children,
    keyed "pid/name" (threads of one name summed; "pid/main" the main thread alone)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for root in pids:
        for pid in _descendants(root):
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    stat = (task / "stat").read_text()
                    name = (task / "comm").read_text().strip()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2 :].split()
                # The main thread runs a server's event loop (its front end): keep it apart.
                key = f"{pid}/{'main' if task.name == str(pid) else name}"
                out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


@dataclass
class Point:
    """One perf_analyzer load."""

    label: str
    model: str
    data: Path
    batch: int
    concurrency: int
    shape: int = 0  # --shape for every input (own-length data needs none: each row has one)
    extra: tuple[str, ...] = field(default_factory=tuple)
    protocol: str = "http"  # "grpc": the url given to measure() is the gRPC one


def batch_counts(address: str, model: str) -> tuple[int, int] | None:
    """(inferences, executions) of `model` so far, from the server's HTTP statistics, or
    None where they cannot be read."""
    url = f"http://{address}/v2/models/{model}/stats"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            stats = json.loads(reply.read())["model_stats"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return int(stats["inference_count"]), int(stats["execution_count"])


def measure(
    res: Results, topology: str, url: str, point: Point, pids: Sequence[int], window_ms: int
) -> dict[str, Any] | None:
    """One perf_analyzer point, with the CPU the server processes spent during it and (over
    HTTP) the mean batch the model ran, warm-up included."""
    args = ["-m", point.model, "-u", url, "-b", str(point.batch), "--input-data",
            str(point.data), "--concurrency-range", str(point.concurrency)]  # fmt: skip
    args += point.extra
    if point.protocol == "grpc":
        args += ["-i", "grpc"]
    if point.concurrency > 1:
        args.append("--async")
    if point.shape:
        for name in INPUTS:
            args += ["--shape", f"{name}:{point.shape}"]
    counted = batch_counts(url, point.model) if point.protocol == "http" else None
    before, t0 = thread_cpu(pids), time.perf_counter()
    m = None
    # Once more with a longer window and a looser stability rule if the first try finds no
    # stable windows (a variable-length mix varies more from window to window).
    for window, stability in ((window_ms, 25), (2 * window_ms, 50)):
        tries = ["-p", str(window), "-s", str(stability), "--max-trials", "5"]
        try:
            m = perf_analyzer_point([*args, *tries], batch_size=point.batch, timeout=180)
            break
        except Exception as exc:  # noqa: BLE001 - one point failing must not stop the run
            res.note(f"{topology} {point.label} (-p {window} -s {stability}): "
                     f"{type(exc).__name__}: {str(exc)[-600:]}")  # fmt: skip
    if m is None:
        return None
    elapsed = time.perf_counter() - t0
    after = thread_cpu(pids)
    used = {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0.05}
    requests_per_s = m.throughput / point.batch
    record = {
        "topology": topology, "label": point.label, "model": point.model,
        "batch": point.batch, "concurrency": point.concurrency,
        "infer_per_s": m.throughput, "requests_per_s": requests_per_s,
        "p50_ms": m.latency_p50_us / 1e3, "p99_ms": m.latency_p99_us / 1e3,
        "server_queue_us": m.server_queue_us, "compute_input_us": m.server_compute_input_us,
        "compute_infer_us": m.server_compute_infer_us,
        "compute_output_us": m.server_compute_output_us,
        # perf_analyzer's averages outside the server's queue and compute: the client's
        # own send and receive, and everything between (the network, the server's parsing,
        # decoding, encoding and hand-offs outside the model's statistics).
        "client_send_us": m.client_send_us,
        "network_server_us": m.network_server_send_recv_us, "client_recv_us": m.client_recv_us,
        # CPU per second of the whole perf_analyzer run (its windows and stabilisation),
        # so per-request figures are averages over a busy process, not one request's cost.
        "cpu_cores": {k: round(v / elapsed, 3) for k, v in sorted(used.items())},
    }  # fmt: skip
    total_cores = sum(used.values()) / elapsed
    record["server_cpu_us_per_request"] = total_cores / max(requests_per_s, 1e-9) * 1e6
    counts = batch_counts(url, point.model) if counted is not None else None
    if counted is not None and counts is not None:
        record["mean_batch"] = (counts[0] - counted[0]) / max(1, counts[1] - counted[1])
    res.add("server", record)
    busiest = max(used.items(), key=lambda kv: kv[1], default=("-", 0.0))
    res.line(
        f"{topology:14s} {point.label:34s} {m.throughput:8.0f} inf/s {requests_per_s:7.0f} req/s "
        f"p50 {record['p50_ms']:7.2f} p99 {record['p99_ms']:7.2f} ms | cpu {total_cores:4.1f} "
        f"cores, busiest {busiest[0]} {busiest[1] / elapsed:.2f}"
        + (f" | batch {record['mean_batch']:.1f}" if "mean_batch" in record else "")
    )
    return record

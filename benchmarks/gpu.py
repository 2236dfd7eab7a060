"""Build, check and time bertserve's GPU engine in one run: in process and through the server.

    PYTHONUNBUFFERED=1 PYTHONPATH=src python3 benchmarks/gpu.py --out "$OUT" \
        [--stages engine,accuracy,serve,gpus] [--nginx PATH] [--py-spy PATH] [--dry-run]
        [--baseline-src OTHER/src --budget-seconds S] [--only LABELS --repeat N]

Stages (each writes into gpu.json under --out as it goes; a failing stage is noted, the run
goes on):
- engine: the card's ceilings; parity of the padded and the packed engine (fp16, FP8) with
  transformers fp32 on SQuAD-like rows; in-process throughput of both on the same rows;
  batch-1 `run()` latency.
- accuracy: the random BERT-base fine-tuned for about a minute on a synthetic span task, then
  every precision (padded and packed) against that model in fp32 on held-out examples.
- serve: one `bertserve serve` on GPU 0, the real perf_analyzer: padded vs packed, large
  requests and batch-1, batch 4 at concurrency 256, the QA text path and the model alone on
  the same windows; CPU per request of every server thread; a py-spy GIL profile.
- gpus: both GPUs, one server (instance_group gpus [0, 1]) vs one server per GPU behind a
  local nginx, large and small requests.
- frontend: small requests, batch 1 and the text path with GIL profiles; two processes
  sharing one GPU behind nginx.
- builds: this build against `--baseline-src` (another checkout's src/), two servers on one
  GPU measured in turn at each point, with the accuracy fine-tune while they load and a probe
  of what a batch's page faults cost; `--this-src` runs "this" from another src/ (the pair
  with its roles swapped), and each HTTP point records the model's mean batch.
- textpath: the QA pipeline in several instance/batch shapes, the tokenizer's threads on
  and off, a QA model with a queue delay, py-spy over every thread and over the GIL's holder
  (`--only` picks points by label, `--repeat` rounds, `--profile` keeps py-spy with them).
- kernels: where one packed batch's GPU time goes, kernel by kernel (torch.profiler).
- attention: the packed attention kernels side by side on one batch of the mix.
- small: where a batch-1 request's time goes (the kernels of a pass, the scheduler's
  hand-offs, the server over HTTP and gRPC with perf_analyzer's breakdown, the stand-in
  engine's server on the same host).
- hop: batch-1 requests through the scheduler in process, against `run()`.
- handoff: a batch-1 pass launched on one thread and waited for on another, by what each
  thread does meanwhile, against `run()` on one thread.
- buildqa: the pipeline `bertserve build` writes for a GPU model of max batch 256, against
  the narrow shape it wrote before, and the model alone on the same windows.
- refqa: the pipeline `bertserve build` writes over the reference's own batching (max batch
  4, a 200 ms queue delay), the baseline build against this one, and the two-instance shape
  it wrote before beside it.

Same-machine ratios: `builds` can end with the packed engine in process
(`--inprocess-seconds`); `env.python_loop_us` records the host's single-thread speed.

`--dry-run` runs every stage on the CPU with a tiny model, to check the code paths here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gpu_common import Results, Target, environment, free_engines, write_checkpoint

__all__ = ["main"]


@dataclass(frozen=True)
class Run:
    """One invocation: where it runs, where results and scratch files go, what it may use."""

    target: Target
    res: Results
    work: Path
    seconds: float
    window_ms: int
    train_seconds: float
    nginx: str
    py_spy: str
    baseline_src: str = ""
    budget_seconds: float = 1e9
    inprocess_seconds: float = 0.0  # builds stage: the packed engine in process after
    only: tuple[str, ...] = ()  # builds stage: the points whose labels start so (empty: all)
    repeat: int = 1  # builds, textpath (with `only`) stages: rounds over the chosen points
    profile: bool = False  # textpath stage with `only`: keep the points' py-spy profiles
    this_flags: tuple[str, ...] = ()  # builds stage: more `bertserve serve` flags for "this"
    this_src: str = ""  # builds stage: "this" server's src/ (empty: the carried checkout's)

    def checkpoint(self) -> Path:
        vdir = self.work / "ckpt" / "bert_base" / "1"
        if not (vdir / "model.safetensors").is_file():
            write_checkpoint(self.work / "ckpt", "bert_base", self.target)
        return vdir


def stage_engine(run: Run) -> None:
    import gpu_engine

    vdir = run.checkpoint()
    run.res.stage("ceilings", lambda: gpu_engine.ceilings(run.res, run.target))
    run.res.stage("parity", lambda: gpu_engine.parity(run.res, vdir, run.target))
    run.res.stage(
        "throughput", lambda: gpu_engine.throughput(run.res, vdir, run.target, run.seconds)
    )
    run.res.stage("latency", lambda: gpu_engine.latency(run.res, vdir, run.target))


def stage_kernels(run: Run) -> None:
    """Per-kernel time of one packed batch of the SQuAD mix (FP8 and fp16, 32k tokens); the
    same batch's graph replay with each packed attention kernel against the default's."""
    import gpu_engine

    vdir = run.checkpoint()
    budget = 2048 if run.target.dry_run else 32768
    for precision in ("fp8", "fp16"):
        run.res.stage(f"kernels {precision}", lambda p=precision: gpu_engine.kernels(
            run.res, vdir, run.target, p, budget))  # fmt: skip
    kernels = ("flash",) if run.target.dry_run else ("flash", "triton")
    for precision in ("fp8", "fp16"):
        for kernel in kernels:
            run.res.stage(
                f"replay {precision} {kernel}",
                lambda p=precision, k=kernel: gpu_engine.replay(
                    run.res, vdir, run.target, p, budget, packed_attention=k
                ),
            )


def stage_attention(run: Run) -> None:
    """The packed attention kernels (FlashAttention-2, cuDNN, memory-efficient) on one
    batch of the SQuAD mix, in both activation dtypes."""
    import gpu_attention

    for dtype in ("bfloat16", "float16"):
        run.res.stage(f"attention {dtype}", lambda d=dtype: gpu_attention.compare(
            run.res, run.target, d))  # fmt: skip


def stage_accuracy(run: Run) -> None:
    import gpu_accuracy

    trained = run.work / "trained" / "1"
    run.res.stage(
        "fine-tune",
        lambda: gpu_accuracy.fine_tune(
            run.res, run.checkpoint(), trained, run.target, run.train_seconds
        ),
    )
    count = 64 if run.target.dry_run else 1024
    run.res.stage("agreement", lambda: gpu_accuracy.evaluate(run.res, trained, run.target, count))


def _gil_profile(
    run: Run, pid: int, seconds: float, name: str, mode: str = "--gil"
) -> Callable[[], None]:
    """Start py-spy sampling `pid`'s threads that hold the GIL (mode "--gil"), or every
    thread, waiting or not ("--idle"); the returned callable waits for it and writes the top
    frames into the results (the raw stacks stay in the output folder)."""
    if not run.py_spy or run.target.dry_run:
        return lambda: None
    raw = run.res.out / f"spy-{mode.strip('-')}-{name}.txt"
    proc = subprocess.Popen(
        [run.py_spy, "record", mode, "--threads", "--format", "raw", "-r", "250",
         "-d", str(int(seconds)), "-p", str(pid), "-o", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def done() -> None:
        _, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0 or not raw.is_file():
            run.res.note(f"py-spy {name}: exit {proc.returncode}: {err[-500:]}")
            return
        run.res.put(f"spy_{mode.strip('-')}_{name}", _top_frames(raw))

    return done


def _top_frames(raw: Path, top: int = 25) -> dict[str, object]:
    """py-spy raw stacks -> samples per thread and the functions that held the GIL most
    (self time: the innermost frame)."""
    threads: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] = threads.get(frames[0], 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    best = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return {
        "samples": total,
        "threads": dict(sorted(threads.items(), key=lambda kv: -kv[1])),
        "self": [(frame, round(n / max(total, 1), 4)) for frame, n in best],
    }


def stage_serve(run: Run) -> None:
    """One server on GPU 0: padded vs packed, the small-request path, the QA text path."""
    import gpu_engine
    from gpu_serving import ModelSpec, Point, qa_windows_file, start_server, workload_files
    from gpu_serving import write_repository as write_repo

    target, res = run.target, run.res
    vdir = run.checkpoint()
    # In-process baselines on this machine, for the server/in-process ratios.
    res.stage("in-process baseline", lambda: gpu_engine.throughput(
        res, vdir, target, run.seconds, precisions=("fp16",), budgets=(32768,)))  # fmt: skip
    data = workload_files(run.work, 512 if target.dry_run else 2048)
    one_gpu = (0,) if not target.dry_run else ()
    models = {
        "pad16": ModelSpec("fp16", False, gpus=one_gpu),
        "pad8": ModelSpec("fp8", False, gpus=one_gpu),
        "pk16": ModelSpec("fp16", True, gpus=one_gpu),
        "pk8": ModelSpec("fp8", True, gpus=one_gpu),
    }
    repo = write_repo(run.work / "repo1", vdir, models, target, qa={"qa16": "pk16"})
    qa_data, pairs, windows = qa_windows_file(repo, "pk16", run.work)
    res.put("qa_sample", {"pairs": pairs, "windows": windows})
    server = start_server(repo, res.out / "server-1gpu.log")
    try:
        small = 1 if target.dry_run else 4
        b = _batch(target)
        points = [
            Point("pad16 full384 -b128 c8", "pad16", data["full"], b(128), 8, 384),
            Point("pad8 full384 -b128 c8", "pad8", data["full"], b(128), 8, 384),
            Point("pad16 mix -b64 c16", "pad16", data["mix"], b(64), 16, 384),
            Point("pk16 full384 -b128 c8", "pk16", data["full"], b(128), 8, 384),
            Point("pk16 mix -b64 c16", "pk16", data["mix"], b(64), 16, 384),
            Point("pk8 mix -b64 c16", "pk8", data["mix"], b(64), 16, 384),
            Point("pk8 mix -b64 c32", "pk8", data["mix"], b(64), 32, 384),
            Point("pad16 full384 -b1 c1", "pad16", data["full"], 1, 1, 384),
            Point("pk16 full384 -b1 c1", "pk16", data["full"], 1, 1, 384),
            Point("pk16 own -b1 c1", "pk16", data["own"], 1, 1),
            Point("pk8 own -b1 c1", "pk8", data["own"], 1, 1),
            Point(f"pad16 full384 -b{small} c256", "pad16", data["full"], small, 256, 384),
            Point(f"pk16 mix -b{small} c256", "pk16", data["mix"], small, 256, 384),
            Point("pk16 own -b1 c64", "pk16", data["own"], 1, 64),
            Point("pk16 own -b1 c256", "pk16", data["own"], 1, 256),
            Point("pk16 qa-windows -b32 c16", "pk16", qa_data, b(32), 16, 384),
            Point("qa16 text -b8 c64", "qa16", _qa_text(), 8, 64),
            Point("qa16 text -b8 c256", "qa16", _qa_text(), 8, 256),
        ]
        profiled = [p for p in points if "c256" in p.label and p.model in ("pad16", "pk16")]
        _measure_all(run, "1 process 1 GPU", server, points, profiled)
    finally:
        server.stop()
        free_engines()


def _measure_all(
    run: Run, topology: str, server: Any, points: list[Any], profiled: list[Any]
) -> None:
    """Every point on one server; a GIL profile of the server beside the `profiled` ones."""
    from gpu_serving import measure

    for point in points:
        wait = _gil_profile(run, server.pid, 8, point.model) if point in profiled else None
        measure(run.res, topology, server.http_url, point, [server.pid], run.window_ms)
        if wait is not None:
            wait()


def _batch(target: Target) -> Callable[[int], int]:
    """Client batch sizes: as given on a GPU, a sixteenth on the dry run's CPU."""
    return (lambda n: max(1, n // 16)) if target.dry_run else (lambda n: n)


def _qa_text() -> Path:
    return Path(__file__).resolve().parents[1] / "src/bertserve/data/qa_perf_input.json"


def stage_gpus(run: Run) -> None:
    """Both GPUs: one server on one GPU, one server feeding both, and one server per GPU
    behind nginx (`--only` picks points, `--this-flags` adds serve flags to the first two)."""
    from gpu_serving import ModelSpec, Nginx, Point, measure, start_server, workload_files
    from gpu_serving import write_repository as write_repo

    target, res = run.target, run.res
    vdir = run.checkpoint()
    data = workload_files(run.work, 512 if target.dry_run else 2048)
    both = () if target.dry_run else (0, 1)
    small = 1 if target.dry_run else 4
    b = _batch(target)
    points = [
        Point("pk8 mix -b64 c32", "pk8", data["mix"], b(64), 32, 384),
        Point("pk8 mix -b64 c64", "pk8", data["mix"], b(64), 64, 384),
        Point("pk8 own -b1 c1", "pk8", data["own"], 1, 1),
        Point("pk8 own -b1 c256", "pk8", data["own"], 1, 256),
        Point(f"pk8 mix -b{small} c256", "pk8", data["mix"], small, 256, 384),
    ]
    points = [p for p in points if _chosen(p.label, run.only)]
    # The one-GPU baseline in the same call (the ratio's denominator), then both GPUs.
    one = () if target.dry_run else (0,)
    for label, gpus in (("1 process 1 GPU", one), ("1 process 2 GPUs", both)):
        repo = write_repo(run.work / f"repo-{len(gpus)}", vdir,
                          {"pk8": ModelSpec("fp8", True, gpus=gpus)}, target)  # fmt: skip
        server = start_server(repo, res.out / f"server-{len(gpus)}gpu.log", args=run.this_flags)
        try:
            for point in points:
                measure(res, label, server.http_url, point, [server.pid], run.window_ms)
        finally:
            server.stop()
            free_engines()
    if not run.nginx:
        res.note("no nginx given (--nginx): one process per GPU not measured")
        return
    repo = write_repo(run.work / "repo3", vdir, {"pk8": ModelSpec("fp8", True)}, target)
    gpu_count = 1 if target.dry_run else 2
    servers = [
        start_server(repo, res.out / f"server-gpu{i}.log",
                     env={} if target.dry_run else {"CUDA_VISIBLE_DEVICES": str(i)})
        for i in range(gpu_count)
    ]  # fmt: skip
    nginx = None
    try:
        nginx = Nginx(run.nginx, [s.http_url for s in servers], run.work / "nginx", workers=4)
        pids = [s.pid for s in servers] + [nginx.proc.pid]
        for point in points:
            measure(res, "nginx+2 procs", nginx.url, point, pids, run.window_ms)
    finally:
        if nginx is not None:
            nginx.stop()
        for s in servers:
            s.stop()


def stage_frontend(run: Run) -> None:
    """The front end after its per-request work was trimmed: small requests, batch 1 and the
    text path on one process (GIL profiles), then two processes sharing GPU 0 behind nginx."""
    import gpu_engine
    from gpu_serving import (
        ModelSpec,
        Nginx,
        Point,
        measure,
        qa_windows_file,
        start_server,
        workload_files,
    )
    from gpu_serving import write_repository as write_repo

    target, res = run.target, run.res
    vdir = run.checkpoint()
    res.stage("in-process baseline", lambda: gpu_engine.throughput(
        res, vdir, target, run.seconds, budgets=(32768,)))  # fmt: skip
    data = workload_files(run.work, 512 if target.dry_run else 2048)
    one_gpu = (0,) if not target.dry_run else ()
    models = {
        "pad16": ModelSpec("fp16", False, gpus=one_gpu),
        "pk16": ModelSpec("fp16", True, gpus=one_gpu),
        "pk8": ModelSpec("fp8", True, gpus=one_gpu),
    }
    repo = write_repo(run.work / "repo4", vdir, models, target, qa={"qa16": "pk16"})
    qa_data, _, _ = qa_windows_file(repo, "pk16", run.work)
    small = 1 if target.dry_run else 4
    b = _batch(target)
    server = start_server(repo, res.out / "server-frontend.log")
    try:
        small_padded = Point(
            f"pad16 full384 -b{small} c256", "pad16", data["full"], small, 256, 384
        )
        text = Point("qa16 text -b8 c64", "qa16", _qa_text(), 8, 64)
        points = [
            small_padded,
            Point(f"pk16 mix -b{small} c256", "pk16", data["mix"], small, 256, 384),
            Point("pad16 full384 -b1 c1", "pad16", data["full"], 1, 1, 384),
            Point("pk16 own -b1 c1", "pk16", data["own"], 1, 1),
            Point("pk16 own -b1 c1 grpc", "pk16", data["own"], 1, 1, protocol="grpc"),
            Point("pk16 own -b1 c2", "pk16", data["own"], 1, 2),
            Point("pk16 own -b1 c4", "pk16", data["own"], 1, 4),
            Point("pk8 mix -b64 c16", "pk8", data["mix"], b(64), 16, 384),
            Point("pk16 qa-windows -b32 c16", "pk16", qa_data, b(32), 16, 384),
            text,
        ]
        _measure_all(run, "1 process", server, points, [small_padded, text])
    finally:
        server.stop()
        free_engines()
    if not run.nginx:
        return
    repo = write_repo(run.work / "repo5", vdir, {k: models[k] for k in ("pad16", "pk16")}, target)
    env = {} if target.dry_run else {"CUDA_VISIBLE_DEVICES": "0"}
    servers = [start_server(repo, res.out / f"server-gpu0-{i}.log", env=env) for i in range(2)]
    nginx = None
    try:
        nginx = Nginx(run.nginx, [s.http_url for s in servers], run.work / "nginx0", workers=4)
        pids = [s.pid for s in servers] + [nginx.proc.pid]
        for point in (
            Point(f"pad16 full384 -b{small} c256", "pad16", data["full"], small, 256, 384),
            Point(f"pk16 mix -b{small} c256", "pk16", data["mix"], small, 256, 384),
            Point("pad16 full384 -b128 c8", "pad16", data["full"], b(128), 8, 384),
            Point("pk16 mix -b64 c16", "pk16", data["mix"], b(64), 16, 384),
        ):
            measure(res, "nginx+2 procs/1 GPU", nginx.url, point, pids, run.window_ms)
    finally:
        if nginx is not None:
            nginx.stop()
        for s in servers:
            s.stop()


def _page_faults(run: Run) -> None:
    """What a batch's fresh buffers cost on this machine: 50 batches of three stacked 786 KB
    arrays with glibc's default thresholds and with `serve`'s (`--malloc-keep-mb`)."""
    probe = (
        "import resource, sys, time\n"
        "import numpy as np\n"
        "from bertserve.malloc import keep_freed_memory\n"
        "if sys.argv[1] == 'keep': keep_freed_memory(1 << 30)\n"
        "requests = [np.ones((4, 384), np.int64) for _ in range(64)]\n"
        "f, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()\n"
        "for _ in range(50):\n"
        "    batch = [np.concatenate(requests) for _ in range(3)]\n"
        "    del batch\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f) / 50,"
        " (time.perf_counter() - t) / 50 * 1e6)\n"
    )
    for mode in ("default", "keep"):
        done = subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, check=True
        )
        faults, us = map(float, done.stdout.split())
        run.res.add("page_faults", {"malloc": mode, "faults_per_batch": faults, "us_per_batch": us})
        run.res.line(
            f"stacking 64 requests x3, malloc {mode:7s}: {faults:5.0f} page faults, {us:7.0f} us"
        )


def _start_together(servers: Mapping[str, Any]) -> Callable[[], dict[str, str]]:
    """Start servers on threads at once, so their loads overlap; the callable waits for
    them and says why any failed (label -> error)."""
    import threading

    failed: dict[str, str] = {}

    def start(label: str) -> None:
        try:
            servers[label].start()
        except Exception as exc:  # noqa: BLE001 - the others are still measured
            failed[label] = f"{type(exc).__name__}: {exc}"[-1500:]

    threads = [threading.Thread(target=start, args=(label,)) for label in servers]
    for thread in threads:
        thread.start()

    def wait() -> dict[str, str]:
        for thread in threads:
            thread.join()
        return failed

    return wait


def _drop_failed(res: Results, servers: dict[str, Any], failed: Mapping[str, str]) -> None:
    for label, error in failed.items():
        res.note(f"server {label} did not start: {error}")
        del servers[label]


def stage_builds(run: Run) -> None:
    """This build against the baseline build (`--baseline-src`), two servers on GPU 0 loaded
    together and measured in turn at each point; the accuracy fine-tune runs while they
    load. Points: the QA text path and the model alone on its windows, small requests,
    batch 1, the SQuAD mix with large requests (32k budget; this build also a 64k one)."""
    import gpu_accuracy
    from gpu_serving import ModelSpec, Point, measure, qa_windows_file, start_server, workload_files
    from gpu_serving import write_repository as write_repo

    target, res = run.target, run.res
    started = time.perf_counter()
    res.stage("page faults", lambda: _page_faults(run))
    vdir = run.checkpoint()
    data = workload_files(run.work, 512 if target.dry_run else 2048)
    gpu = (0,) if not target.dry_run else ()
    models = {
        "pad16": ModelSpec("fp16", False, gpus=gpu),
        "pk16": ModelSpec("fp16", True, gpus=gpu),
        "pk8": ModelSpec("fp8", True, gpus=gpu),
    }
    # this build's wide model loads only where a point of it is chosen: otherwise both
    # servers hold the same models (an A/A pair, or a pair with the roles swapped)
    wide = {"pk8w": ModelSpec("fp8", True, max_batch=512, gpus=gpu, max_tokens=65536)}
    if not any(_chosen(label, run.only) for label, _, _ in WIDE_POINTS):
        wide = {}
    builds = _builds(run)
    servers = {}
    for label, path in builds.items():
        repo = write_repo(run.work / f"repo-{label}", vdir,
                          {**models, **(wide if label == "this" else {})},
                          target, qa={"qa16": "pk16"})  # fmt: skip
        flags = run.this_flags if label == "this" else ()
        servers[label] = start_server(repo, res.out / f"server-{label}.log", pythonpath=path,
                                      ready=False, args=flags)  # fmt: skip
    qa_data, pairs, windows = qa_windows_file(run.work / "repo-this", "pk16", run.work)
    res.put("qa_sample", {"pairs": pairs, "windows": windows})
    loaded = _start_together(servers)
    try:
        trained = run.work / "trained" / "1"
        res.stage("fine-tune", lambda: gpu_accuracy.fine_tune(
            res, vdir, trained, target, run.train_seconds))  # fmt: skip
        count = 64 if target.dry_run else 1024
        variants = tuple(v for v in gpu_accuracy.VARIANTS if v[1] in ("fp16", "fp8"))
        res.stage("agreement", lambda: gpu_accuracy.evaluate(
            res, trained, target, count, variants))  # fmt: skip
        free_engines()
        _drop_failed(res, servers, loaded())
        b = _batch(target)
        small = 1 if target.dry_run else 4
        points = [
            Point("qa16 text -b8 c64", "qa16", _qa_text(), 8, 64),
            Point("qa16 text -b8 c256", "qa16", _qa_text(), 8, 256),
            Point("qa16 text -b1 c1", "qa16", _qa_text(), 1, 1),
            Point(f"pk16 mix -b{small} c256", "pk16", data["mix"], small, 256, 384),
            Point(f"pad16 full384 -b{small} c256", "pad16", data["full"], small, 256, 384),
            Point("pad16 full384 -b1 c1", "pad16", data["full"], 1, 1, 384),
            Point("pk16 own -b1 c1", "pk16", data["own"], 1, 1),
            Point("pk16 own -b1 c1 grpc", "pk16", data["own"], 1, 1, protocol="grpc"),
            Point("pk16 own -b1 c2", "pk16", data["own"], 1, 2),
            Point("pk16 own -b1 c4", "pk16", data["own"], 1, 4),
            Point("pk8 mix -b64 c16", "pk8", data["mix"], b(64), 16, 384),
            Point("pk16 qa-windows -b32 c16", "pk16", qa_data, b(32), 16, 384),
        ]
        only_this = [
            Point(label, "pk8w", data["mix"], b(rows), clients, 384)
            for label, rows, clients in WIDE_POINTS
        ]
        chosen = [p for p in points + only_this if _chosen(p.label, run.only)]
        for point in [p for _ in range(run.repeat) for p in chosen]:
            for label, server in servers.items():
                if point in only_this and label != "this":
                    continue
                if time.perf_counter() - started > run.budget_seconds:
                    res.note(f"time budget spent: {label} {point.label} not measured")
                    continue
                address = server.grpc_url if point.protocol == "grpc" else server.http_url
                measure(res, label, address, point, [server.pid], run.window_ms)
        # The text path again with the other server gone: one server on the GPU, as in a
        # deployment (and as round 2's call E, which disagreed with D and F).
        servers["base"].stop()
        alone = [points[0], points[-1], points[0]]
        for point in [p for p in alone if _chosen(p.label, run.only)]:
            server = servers["this"]
            measure(res, "this-alone", server.http_url, point, [server.pid], run.window_ms)
    finally:
        loaded()
        for server in servers.values():
            server.stop()  # (a server that failed to start was stopped already: a no-op)
        free_engines()
    if run.inprocess_seconds:
        # What the server's numbers are a share of, on this machine: the packed engine in
        # process (two instances, batches filled to the budget), fp16 as pk16, FP8 as pk8/pk8w.
        import gpu_engine

        seconds = run.inprocess_seconds
        res.stage("in process", lambda: (
            gpu_engine.throughput(res, vdir, target, seconds, ("fp16",), (32768,), padded=False),
            gpu_engine.throughput(res, vdir, target, seconds, ("fp8",), (32768, 65536),
                                  padded=False),
        ))  # fmt: skip


def _builds(run: Run) -> dict[str, list[Path]]:
    """The two builds a stage compares: label -> the src/ put first on the server's path
    (none: the carried checkout's)."""
    return {
        "base": [Path(run.baseline_src)] if run.baseline_src else [],
        "this": [Path(run.this_src)] if run.this_src else [],
    }


def _build_seed(run: Run, repo: Path, flags: tuple[str, ...] = ()) -> tuple[str, str]:
    """`bertserve build` of the seed's bert_base_trt_gpu with random weights into `repo`
    (the tiny preset's CPU model on a dry run), with more build `flags`; (preset, model),
    or ("", "") when the build failed (noted)."""
    res = run.res
    preset, model = ("tiny", "bert_tiny_onnx_cpu") if run.target.dry_run else (
        "seed", "bert_base_trt_gpu")  # fmt: skip
    cmd = [sys.executable, "-m", "bertserve", "build", "--preset", preset, "--only", model,
           *flags, "--weights", "random", "--output", str(repo), "--force"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # noqa: S603
    record = {"seconds": round(time.perf_counter() - started, 1), "exit": done.returncode,
              "tail": done.stdout[-800:]}  # fmt: skip
    res.put(f"build {repo.name}", record)
    if done.returncode:
        res.note(f"bertserve build failed: {done.stderr[-800:]}")
        return "", ""
    return preset, model


def stage_refqa(run: Run) -> None:
    """The QA pipeline over the reference's own batching, as `bertserve build` writes it:
    the seed's bert_base_trt_gpu (max batch 4, a 200 ms queue delay) and its `_qa` pipeline
    (8 instances x 8 pairs in processes, 4 windows a call), served by the baseline build and
    this one side by side and measured in turn: a lone question, eight-pair requests at c16
    and c64, and the model alone on the pipeline's windows (batches of 4); and beside it the
    two-instance shape `bertserve build` wrote before round 8 (`_qa2`, call BI's `_qa`)."""
    from gpu_serving import Point, measure, qa_windows_file, start_server

    res = run.res
    repo = run.work / "repo-ref"
    preset, model = _build_seed(run, repo)
    if not preset:
        return
    res.put("refqa_configs", {name: (repo / name / "config.pbtxt").read_text()
                              for name in (model, f"{model}_qa")})  # fmt: skip
    # the two-instance shape build wrote before (on the instances' threads), beside it
    from google.protobuf import text_format

    from bertserve.backends.qa_pipeline import pipeline_config
    from bertserve.builder.presets import Overrides, resolve_preset
    from bertserve.builder.qa import pipeline_parameters

    (variant,) = resolve_preset(preset, Overrides(only=(model,)))
    two = pipeline_config(f"{model}_qa2", model, pipeline_parameters(variant), instances=2)
    (repo / f"{model}_qa2" / "1").mkdir(parents=True, exist_ok=True)
    (repo / f"{model}_qa2" / "config.pbtxt").write_text(text_format.MessageToString(two))
    windows_file, pairs, windows = qa_windows_file(repo, model, run.work)
    res.put("qa_sample", {"pairs": pairs, "windows": windows})
    servers = {
        label: start_server(
            repo, res.out / f"server-ref-{label}.log", pythonpath=path, ready=False
        )  # fmt: skip
        for label, path in _builds(run).items()
    }
    _drop_failed(res, servers, _start_together(servers)())
    text, qa = _qa_text(), f"{model}_qa"
    points = [
        Point(f"{qa} text -b1 c1", qa, text, 1, 1),
        Point(f"{qa} text -b8 c16", qa, text, 8, 16),
        Point(f"{qa} text -b8 c64", qa, text, 8, 64),
        Point(f"{model} qa-windows -b4 c16", model, windows_file, 4, 16, 384),
        Point(f"{qa}2 text -b8 c64", f"{qa}2", text, 8, 64),
        Point(f"{qa}2 text -b8 c16", f"{qa}2", text, 8, 16),
    ]
    chosen = [p for p in points if _chosen(p.label, run.only)]
    try:
        for point in [p for _ in range(run.repeat) for p in chosen]:
            for label, server in servers.items():
                measure(res, label, server.http_url, point, [server.pid], run.window_ms)
    finally:
        for server in servers.values():
            server.stop()


def stage_buildqa(run: Run) -> None:
    """The QA pipeline as `bertserve build` writes it, as a user gets it: the seed's
    bert_base_trt_gpu built with max batch 256 and random weights, its `_qa` pipeline (the
    wide shape, 8 x 64 pairs, 64 windows a call) against the earlier narrow shape (2 x 8,
    4 windows) written beside it over the same model, and the model alone on the windows.
    The dry run builds the tiny preset on the CPU (narrow shapes both: its model is a CPU
    one)."""
    from google.protobuf import text_format

    from bertserve.backends.qa_pipeline import pipeline_config
    from bertserve.builder.presets import Overrides, resolve_preset
    from bertserve.builder.qa import pipeline_parameters
    from gpu_serving import Point, measure, qa_windows_file, start_server

    target, res = run.target, run.res
    repo = run.work / "repo-build"
    preset, model = _build_seed(run, repo, ("--max-batch-size", "256"))
    if not preset:
        return
    (variant,) = resolve_preset(preset, Overrides(only=(model,), max_batch_size=256))
    narrow = pipeline_config(
        "narrow_qa", model, pipeline_parameters(variant) | {"max_windows_per_call": "4"},
        max_batch_size=8, instances=2,
    )  # fmt: skip
    (repo / "narrow_qa" / "1").mkdir(parents=True, exist_ok=True)
    (repo / "narrow_qa" / "config.pbtxt").write_text(text_format.MessageToString(narrow))
    res.put("buildqa_wide_config", (repo / f"{model}_qa" / "config.pbtxt").read_text())
    windows_file, pairs, windows = qa_windows_file(repo, model, run.work)
    res.put("qa_sample", {"pairs": pairs, "windows": windows})
    server = start_server(repo, res.out / "server-build.log")
    text = _qa_text()
    points = [
        Point(f"{model}_qa text -b8 c64", f"{model}_qa", text, 8, 64),
        Point("narrow_qa text -b8 c64", "narrow_qa", text, 8, 64),
        Point(f"{model} qa-windows -b64 c16", model, windows_file, _batch(target)(64), 16, 384),
        Point(f"{model}_qa text -b8 c64", f"{model}_qa", text, 8, 64),
        Point("narrow_qa text -b8 c64", "narrow_qa", text, 8, 64),
    ]
    try:
        for point in points:
            measure(res, "build", server.http_url, point, [server.pid], run.window_ms)
    finally:
        server.stop()


#: the builds stage's points of this build's wide model: (label, rows, concurrency)
WIDE_POINTS = (
    ("pk8w mix -b64 c32", 64, 32),
    ("pk8w mix -b32 c64", 32, 64),
    ("pk8w mix -b64 c48", 64, 48),
)


def _chosen(label: str, only: tuple[str, ...]) -> bool:
    return not only or label.startswith(only)


def stage_textpath(run: Run) -> None:
    """Where the QA text path's time goes: the pipeline over the fp16 packing model with
    three instance/batch shapes, the tokenizer's own threads on and off (a second server
    with TOKENIZERS_PARALLELISM=false), py-spy over every thread and over the GIL's holder,
    and the model alone fed the pipeline's call shape (64 windows padded to 384)."""
    from gpu_serving import (
        ModelSpec,
        Point,
        measure,
        qa_windows_file,
        start_server,
        workload_files,
    )
    from gpu_serving import write_repository as write_repo

    target, res = run.target, run.res
    started = time.perf_counter()
    vdir = run.checkpoint()
    gpu = (0,) if not target.dry_run else ()
    shapes = {"qa8x64": (8, 64), "qa16x32": (16, 32), "qa32x16": (32, 16), "qa16x64": (16, 64),
              "qa2x64": (2, 64)}  # fmt: skip
    # pk16d: the same model with a 3 ms queue delay, behind the pipeline qa8x64d (8 x 64),
    # whether calls that arrive spread out make fuller batches when the batcher waits.
    models = {
        "pk16": ModelSpec("fp16", True, gpus=gpu),
        "pk16d": ModelSpec("fp16", True, gpus=gpu, delay_us=3000),
    }
    repo = write_repo(
        run.work / "repo-text", vdir, models, target,
        qa={**{name: "pk16" for name in shapes}, "qa8x64d": "pk16d"},
        qa_shapes={**shapes, "qa8x64d": (8, 64)},
    )  # fmt: skip
    qa_data, pairs, windows = qa_windows_file(repo, "pk16", run.work)
    res.put("qa_sample", {"pairs": pairs, "windows": windows})
    data = workload_files(run.work, 512 if target.dry_run else 2048)
    servers = {
        "tok-threads": start_server(repo, res.out / "server-tok.log", ready=False),
        "tok-serial": start_server(
            repo, res.out / "server-serial.log", env={"TOKENIZERS_PARALLELISM": "false"},
            ready=False,
        ),
    }  # fmt: skip
    _drop_failed(res, servers, _start_together(servers)())
    b = _batch(target)
    small = 1 if target.dry_run else 4
    text = _qa_text()
    points = [
        ("tok-threads", Point("qa8x64 text -b8 c64", "qa8x64", text, 8, 64), "--idle"),
        ("tok-threads", Point("qa8x64 text -b8 c64", "qa8x64", text, 8, 64), "--gil"),
        ("tok-threads", Point("qa16x32 text -b8 c64", "qa16x32", text, 8, 64), ""),
        ("tok-threads", Point("qa32x16 text -b8 c64", "qa32x16", text, 8, 64), ""),
        ("tok-threads", Point("qa32x16 text -b8 c128", "qa32x16", text, 8, 128), ""),
        ("tok-threads", Point("pk16 qa-windows -b64 c16", "pk16", qa_data, b(64), 16, 384), ""),
        ("tok-threads", Point("pk16 mix -b4 c256", "pk16", data["mix"], small, 256, 384), "--idle"),
        ("tok-threads", Point("pk16 mix -b4 c256", "pk16", data["mix"], small, 256, 384), "--gil"),
        ("tok-threads", Point("pk16 qa-windows -b32 c16", "pk16", qa_data, b(32), 16, 384), ""),
        ("tok-serial", Point("qa8x64 text -b8 c64", "qa8x64", text, 8, 64), ""),
        ("tok-serial", Point("qa32x16 text -b8 c64", "qa32x16", text, 8, 64), ""),
        # More pairs in flight than the pipeline's instances hold at once, so an instance
        # finds its next batch waiting (at c64 -b8 the 512 pairs fill 8 x 64 exactly).
        ("tok-threads", Point("qa8x64 text -b8 c128", "qa8x64", text, 8, 128), ""),
        ("tok-threads", Point("qa8x64 text -b8 c256", "qa8x64", text, 8, 256), ""),
        ("tok-threads", Point("qa16x64 text -b8 c128", "qa16x64", text, 8, 128), ""),
        ("tok-threads", Point("qa16x64 text -b8 c256", "qa16x64", text, 8, 256), ""),
        ("tok-serial", Point("qa8x64 text -b8 c128", "qa8x64", text, 8, 128), ""),
        ("tok-serial", Point("qa16x64 text -b8 c256", "qa16x64", text, 8, 256), ""),
        # Two instances (what `bertserve build` writes): the tokenizer's threads are then
        # most of the pipeline's parallelism.
        ("tok-serial", Point("qa8x64d text -b8 c64", "qa8x64d", text, 8, 64), ""),
        ("tok-serial", Point("qa8x64d text -b8 c128", "qa8x64d", text, 8, 128), ""),
        ("tok-threads", Point("qa2x64 text -b8 c16", "qa2x64", text, 8, 16), ""),
        ("tok-serial", Point("qa2x64 text -b8 c16", "qa2x64", text, 8, 16), ""),
        ("tok-threads", Point("qa2x64 text -b8 c32", "qa2x64", text, 8, 32), ""),
        ("tok-serial", Point("qa2x64 text -b8 c32", "qa2x64", text, 8, 32), ""),
    ]
    if run.only:  # a chosen few, `repeat` rounds, plainly unless `profile`
        chosen = [
            (label, p, spy if run.profile else "")
            for label, p, spy in points
            if _chosen(p.label, run.only)
        ]
        points = chosen * run.repeat
    try:
        for label, point, spy in points:
            if time.perf_counter() - started > run.budget_seconds:
                res.note(f"time budget spent: {label} {point.label} not measured")
                continue
            server = servers[label]
            name = f"{point.model}{spy.strip('-')}"
            wait = _gil_profile(run, server.pid, 8, name, spy) if spy else None
            measure(res, label, server.http_url, point, [server.pid], run.window_ms)
            if wait is not None:
                wait()
    finally:
        for server in servers.values():
            server.stop()


def stage_hop(run: Run) -> None:
    """Batch-1 requests through the scheduler in process against `run()`, stretch by stretch."""
    import gpu_latency

    vdir = run.checkpoint()
    run.res.stage("scheduler hop", lambda: gpu_latency.scheduler_hop(run.res, vdir, run.target))


def stage_handoff(run: Run) -> None:
    """A batch-1 pass launched on one thread and waited for on another (gpu_handoff.py)."""
    import gpu_handoff

    vdir = run.checkpoint()
    run.res.stage("hand-off", lambda: gpu_handoff.handoff(run.res, vdir, run.target))


def stage_small(run: Run) -> None:
    """Where a batch-1 request's time goes: the kernels of a batch-1 pass, the scheduler's
    thread hand-offs around `run()`, then one server measured at batch 1 and concurrency 1
    over HTTP and gRPC (perf_analyzer's breakdown: the client, the network and the server
    outside the model's statistics, the queue, the compute), and the stand-in engine's server
    (benchmarks/standin_backend.py: no GPU) at the same point, the host's own front-end cost."""
    import frontend_cpu
    import gpu_latency
    from gpu_serving import ModelSpec, Point, measure, start_server, workload_files
    from gpu_serving import write_repository as write_repo

    target, res = run.target, run.res
    vdir = run.checkpoint()
    precisions = ("fp16",) if target.dry_run else ("fp16", "fp8")
    res.stage("b1 kernels", lambda: gpu_latency.kernels_b1(res, vdir, target, precisions))
    res.stage("scheduler hop", lambda: gpu_latency.scheduler_hop(res, vdir, target))
    data = workload_files(run.work, 512)
    gpu = (0,) if not target.dry_run else ()
    models = {
        "pad16": ModelSpec("fp16", False, gpus=gpu),
        "pk16": ModelSpec("fp16", True, gpus=gpu),
    }
    repo = write_repo(run.work / "repo-small", vdir, models, target)
    for label, flags in (("this", run.this_flags),):
        server = start_server(repo, res.out / f"server-small-{label}.log", args=flags)
        try:
            for proto in ("http", "grpc"):
                extra = ("-i", "grpc") if proto == "grpc" else ()
                url = server.http_url if proto == "http" else server.address("grpc")
                for point in (
                    Point(f"pad16 full384 -b1 c1 {proto}", "pad16", data["full"], 1, 1, 384, extra),
                    Point(f"pk16 own -b1 c1 {proto}", "pk16", data["own"], 1, 1, 0, extra),
                ):
                    measure(res, label, url, point, [server.pid], run.window_ms)
        finally:
            server.stop()
    res.stage("stand-in", lambda: frontend_cpu.main(
        ["--out", str(res.out / "standin"), "--work", str(run.work / "standin"),
         "--only", "pk own -b1 c1", "--window-ms", str(run.window_ms)]))  # fmt: skip


STAGES: Mapping[str, Callable[[Run], None]] = MappingProxyType(
    {
        "engine": stage_engine,
        "accuracy": stage_accuracy,
        "serve": stage_serve,
        "gpus": stage_gpus,
        "frontend": stage_frontend,
        "builds": stage_builds,
        "textpath": stage_textpath,
        "buildqa": stage_buildqa,
        "refqa": stage_refqa,
        "kernels": stage_kernels,
        "attention": stage_attention,
        "small": stage_small,
        "hop": stage_hop,
        "handoff": stage_handoff,
    }
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bertserve-gpu"))
    parser.add_argument("--stages", default=",".join(STAGES), help=f"of {', '.join(STAGES)}")
    parser.add_argument("--seconds", type=float, default=2.0, help="per in-process point")
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer window")
    parser.add_argument("--train-seconds", type=float, default=75.0)
    parser.add_argument("--nginx", default="", help="nginx binary (gpus stage)")
    parser.add_argument("--py-spy", default="", help="py-spy binary (serve stage GIL profile)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, every path")
    parser.add_argument("--baseline-src", default="", help="builds stage: the other src/")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=1e9,
        help="builds and textpath stages: no point starts later",
    )
    parser.add_argument(
        "--inprocess-seconds",
        type=float,
        default=0.0,
        help="builds stage: then time the packed engine in process, this long a point",
    )
    parser.add_argument(
        "--only",
        default="",
        help="builds and textpath stages: measure only the points whose labels start with "
        "one of these "
        "(comma-separated, e.g. 'pk16 mix,pad16 full384 -b1')",
    )
    parser.add_argument(
        "--this-flags",
        default="",
        help="builds stage: more `bertserve serve` flags for this build's server (e.g. "
        "'--http-workers 4'; with no --baseline-src the other server is this build without them)",
    )
    parser.add_argument(
        "--this-src",
        default="",
        help="builds stage: this build's server from another src/ (e.g. the baseline's, with "
        "--baseline-src this checkout's: the two builds with their roles swapped)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="builds and textpath (with --only) stages: rounds of the points",
    )
    parser.add_argument(
        "--profile", action="store_true", help="textpath stage with --only: keep py-spy on"
    )
    args = parser.parse_args(argv)
    unknown = set(args.stages.split(",")) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}: choose from {', '.join(STAGES)}")
    target = Target(dry_run=args.dry_run)
    res = Results(args.out)
    run = Run(
        target, res, args.work, args.seconds, args.window_ms, args.train_seconds,
        args.nginx, args.py_spy, args.baseline_src, args.budget_seconds,
        args.inprocess_seconds, tuple(filter(None, args.only.split(","))), args.repeat,
        args.profile, tuple(args.this_flags.split()), args.this_src,
    )  # fmt: skip
    res.put("env", environment(target))
    print(res.data["env"], flush=True)
    started = time.perf_counter()
    for name in args.stages.split(","):
        res.stage(name, lambda fn=STAGES[name]: fn(run))
    res.put("total_seconds", round(time.perf_counter() - started, 1))
    print("\n== summary", flush=True)
    for line in res.table:
        print(line)
    for note in res.data["notes"]:
        print(f"note: {note[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The event loop's checks of one small request, beside threads that want the GIL, builds
side by side.

    python benchmarks/loop_gil.py --variant 'main|/tmp/base/src' --variant 'this|src'

What the engine's event loop does with each request to a packing BERT model before it joins
a batch, the three calls of `Engine.infer` and `Scheduler.submit`: the signature's checks
(`Signature.check_inputs`, whose `TokenRanges` reads the ids and token types against the
vocabularies the config declares), the engine instance's own (`TorchInstance.check_request`,
on a CPU instance of a one-layer BERT with BERT-base's vocabulary, random weights: the checks
read only its vocabulary sizes), and the rows' lengths from the mask (`row_lengths`). A
request is four 384-token rows, decoded from a body as the HTTP codec does.

Each build runs in its own process, in turn, for `--rounds` rounds; each round times
`--requests` requests' checks on the main thread:
  alone      nothing else in the process;
  instances  beside two threads that act as GPU instance threads: pack 24 such requests in
             Python (`pack`, the GIL held ~0.5 ms), then wait 0.6 ms without it (the device);
  spinner    beside one pure-Python thread that never lets go (the worst case).
numpy lets go of the GIL around loops over more than 500 elements; a let-go beside a thread
that wants the GIL is a hand-over the main thread waits to get back.

With `--perf` (root, and `perf` able to place a uprobe on libpython) each build's let-goes a
request are also counted: `PyEval_SaveThread` calls over `--requests` requests alone, less
those of a run of none.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

HERE = Path(__file__).resolve().parent

CONFIG = """name: "pk"
backend: "bertserve_torch"
max_batch_size: 256
instance_group { count: 1 kind: KIND_CPU }
parameters { key: "packing" value { string_value: "true" } }
parameters { key: "seq_buckets" value { string_value: "384" } }
parameters { key: "token_buckets" value { string_value: "1536" } }
input [
  { name: "input_ids" data_type: TYPE_INT64 dims: [-1] allow_ragged_batch: true },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [-1] allow_ragged_batch: true },
  { name: "token_type_ids" data_type: TYPE_INT64 dims: [-1] allow_ragged_batch: true }
]
output [
  { name: "start_logits" data_type: TYPE_FP32 dims: [-1] },
  { name: "end_logits" data_type: TYPE_FP32 dims: [-1] }
]
parameters { key: "vocab_size" value { string_value: "30522" } }
parameters { key: "type_vocab_size" value { string_value: "2" } }
parameters { key: "max_position_embeddings" value { string_value: "512" } }
"""

ROWS, WIDTH = 4, 384


def _requests(count: int) -> list[Any]:
    """`count` decoded requests (as the HTTP codec leaves them: arrays over a body's bytes)."""
    import numpy as np

    from bertserve.messages import InferInput, InferRequest

    rng = np.random.default_rng(0)
    requests = []
    for _ in range(count):
        lengths = rng.integers(60, WIDTH + 1, ROWS)
        mask = (np.arange(WIDTH)[None, :] < lengths[:, None]).astype(np.int64)
        arrays = {
            "input_ids": rng.integers(1000, 30000, (ROWS, WIDTH)) * mask,
            "attention_mask": mask,
            "token_type_ids": (np.arange(WIDTH)[None, :] > 30).astype(np.int64) * mask,
        }
        body = b"{}" + b"".join(a.tobytes() for a in arrays.values())  # a header before them
        inputs, offset = [], 2
        for name, array in arrays.items():
            data = np.frombuffer(body, np.uint8, array.nbytes, offset)
            inputs.append(InferInput(name, "INT64", (ROWS, WIDTH), data))
            offset += array.nbytes
        requests.append(InferRequest(model_name="pk", model_version="", inputs=inputs))
    return requests


def _checkpoint(folder: Path) -> Path:
    """A one-layer BERT QA checkpoint with BERT-base's vocabularies and positions."""
    import torch
    import transformers

    version = folder / "1"
    if not (version / "config.json").exists():
        torch.manual_seed(0)
        config = transformers.BertConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=512, type_vocab_size=2,
        )  # fmt: skip
        transformers.BertForQuestionAnswering(config).save_pretrained(str(version))
    return version


def _child(args: argparse.Namespace) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from bertserve.backends.base import Device, LoadContext
    from bertserve.backends.packing import pack, row_lengths
    from bertserve.backends.torch.backend import TorchBackend
    from bertserve.engine.validation import Signature

    config = text_format.Parse(CONFIG, model_config_pb2.ModelConfig())
    signature = Signature(config)
    version = _checkpoint(Path(args.checkpoint))
    instance = TorchBackend().load(config, version, Device("cpu"), LoadContext("pk", 1))
    spec = instance.packing
    assert signature.tokens is not None and spec is not None
    requests = _requests(64)

    def checks(request: Any) -> None:
        feed, _ = signature.check_inputs(request)
        instance.check_request(feed)
        row_lengths(feed, spec)

    if args.phase == "count":
        for i in range(args.requests):
            checks(requests[i % len(requests)])
        return

    feeds = [signature.check_inputs(r)[0] for r in requests]
    known = [row_lengths(f, spec) for f in feeds]
    stop = threading.Event()

    def instance_thread() -> None:
        while not stop.is_set():
            pack(feeds[:24], spec, known[:24])
            time.sleep(0.0006)

    def spinner() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    def timed(others: list[Any]) -> tuple[float, float]:
        stop.clear()
        threads = [threading.Thread(target=t, daemon=True) for t in others]
        for t in threads:
            t.start()
        time.sleep(0.02)
        wall, cpu = time.perf_counter(), time.thread_time()
        for i in range(args.requests):
            checks(requests[i % len(requests)])
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        stop.set()
        for t in threads:
            t.join()
        return wall / args.requests * 1e6, cpu / args.requests * 1e6

    for i in range(200):
        checks(requests[i % len(requests)])
    out = {}
    for label, others in (
        ("alone", []),
        ("instances", [instance_thread, instance_thread]),
        ("spinner", [spinner]),
    ):
        out[label] = timed(others)
    print(json.dumps(out))


def _run(src: str, args: argparse.Namespace, phase: str, requests: int) -> Any:
    env = {**os.environ, "PYTHONPATH": src}
    command = [sys.executable, __file__, "--phase", phase, "--requests", str(requests)]
    command += ["--checkpoint", str(args.checkpoint)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def _let_goes(src: str, args: argparse.Namespace) -> float | None:
    """PyEval_SaveThread calls a request's checks, counted by a perf uprobe, or None."""
    perf = shutil.which("perf")
    library = Path(sysconfig.get_config_var("LIBDIR") or "") / str(
        sysconfig.get_config_var("INSTSONAME") or ""
    )
    if perf is None or not library.is_file():
        return None
    add = [perf, "probe", "-q", "-x", str(library), "-a", "PyEval_SaveThread"]
    subprocess.run(add, capture_output=True, check=False)
    counts = []
    for requests in (0, args.requests):
        command = [sys.executable, __file__, "--phase", "count", "--requests", str(requests)]
        command += ["--checkpoint", str(args.checkpoint)]
        stat = [perf, "stat", "-x", ",", "-e", "probe_libpython3:PyEval_SaveThread", "--"]
        done = subprocess.run(
            stat + command, env={**os.environ, "PYTHONPATH": src},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        match = re.search(r"^(\d+),", done.stderr, re.M)
        if match is None:
            return None
        counts.append(int(match.group(1)))
    return (counts[1] - counts[0]) / args.requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="LABEL|SRC")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--perf", action="store_true", help="count the let-goes (root, perf)")
    parser.add_argument("--out", type=Path, default=None, help="write the results here (JSON)")
    parser.add_argument("--phase", default="", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        _child(args)
        return 0
    variants = dict(v.split("|", 1) for v in args.variant) or {"this": str(HERE.parent / "src")}
    scratch = tempfile.TemporaryDirectory(prefix="loop-gil-")
    args.checkpoint = str(Path(scratch.name) / "pk")
    _checkpoint(Path(args.checkpoint))
    results: dict[str, dict[str, list[list[float]]]] = {v: {} for v in variants}
    for _ in range(args.rounds):
        for label, src in variants.items():
            child = _run(src, args, "time", args.requests)
            stdout, _ = child.communicate()
            for case, pair in json.loads(stdout).items():
                results[label].setdefault(case, []).append(pair)
    summary: dict[str, Any] = {}
    print(f"{'build':8s} {'beside':10s} {'wall us/request (median, range)':>34s} {'cpu us':>8s}")
    for label, cases in results.items():
        summary[label] = {}
        for case, pairs in cases.items():
            walls = sorted(p[0] for p in pairs)
            cpu = statistics.median(p[1] for p in pairs)
            summary[label][case] = {"wall_us": walls, "cpu_us": cpu}
            span = f"{statistics.median(walls):8.1f} ({walls[0]:.1f}-{walls[-1]:.1f})"
            print(f"{label:8s} {case:10s} {span:>34s} {cpu:8.1f}")
    first = next(iter(summary))
    for label in list(summary)[1:]:
        for case, record in summary[label].items():
            ratio = statistics.median(record["wall_us"]) / statistics.median(
                summary[first][case]["wall_us"]
            )
            print(f"{label}/{first} {case}: {ratio:.2f}x the time")
    if args.perf:
        for label, src in variants.items():
            count = _let_goes(src, args)
            summary[label]["let_goes_per_request"] = count
            print(f"{label}: {count} let-goes of the GIL a request")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

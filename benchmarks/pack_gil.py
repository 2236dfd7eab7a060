"""What packing costs beside busy threads: an instance thread's `pack` and `unpack` and the
event loop's per-request `row_lengths`, of this checkout against another build's
(`--baseline-src`), alone and beside threads that run pure Python (as the server's event
loop does under load), at the server's GIL switch interval.

A thread that gives the GIL up inside a numpy call (numpy does so for passes over more
than a few hundred elements) takes it back only when the busy thread is made to drop it, up
to a switch interval later; this program counts what that costs per batch on the machine
it runs on. Batches: four-row requests of the SQuAD-like mix, padded to 384 as
perf_analyzer sends them, as many as fill a 16,384-token budget.

    python benchmarks/pack_gil.py [--baseline-src /tmp/base/src] [--busy 1] [--switch-us 100]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["main"]


def _load(src: Path | None) -> ModuleType:
    """bertserve.backends.packing of `src` (None: the importable one), under its own name."""
    if src is None:
        from bertserve.backends import packing

        return packing
    name = "baseline_packing"
    spec = importlib.util.spec_from_file_location(name, src / "bertserve/backends/packing.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _requests(budget: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    from squad_workload import workload_rows

    rows = workload_rows(4096, seed=seed)  # padded to 384
    out, tokens = [], 0
    for i in range(0, len(rows) - 4, 4):
        group = rows[i : i + 4]
        real = sum(int(r["attention_mask"].sum()) for r in group)
        if tokens + real > budget:
            break
        tokens += real
        out.append({name: np.stack([r[name] for r in group]) for name in group[0]})
    return out


def _time(module: ModuleType, requests: list[dict[str, np.ndarray]], count: int) -> dict:
    spec = module.PackingSpec(16384, 256, "attention_mask")
    known = [module.row_lengths(r, spec) for r in requests]
    batch = module.pack(requests, spec, known)
    logits = np.random.default_rng(1).standard_normal((2, batch.total_tokens), np.float32)
    outputs = {"start_logits": logits[0], "end_logits": logits[1]}
    packs, unpacks = [], []
    for _ in range(count):
        t0 = time.perf_counter()
        module.pack(requests, spec, known)
        t1 = time.perf_counter()
        module.unpack(outputs, batch, -10000.0)
        t2 = time.perf_counter()
        packs.append(t1 - t0)
        unpacks.append(t2 - t1)
    checks = []  # what the event loop does per request of the batch: the mask's lengths
    for _ in range(count):
        t0 = time.perf_counter()
        for request in requests:
            module.row_lengths(request, spec)
        checks.append(time.perf_counter() - t0)
    return {
        "pack_ms": statistics.median(packs) * 1e3,
        "unpack_ms": statistics.median(unpacks) * 1e3,
        "lengths_us": statistics.median(checks) * 1e6 / len(requests),
    }


def _beside_busy(threads: int, work: Any) -> Any:
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    busy = [threading.Thread(target=spin, daemon=True) for _ in range(threads)]
    for t in busy:
        t.start()
    time.sleep(0.05)
    try:
        return work()
    finally:
        stop.set()
        for t in busy:
            t.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--busy", type=int, default=1, help="busy pure-Python threads")
    parser.add_argument("--switch-us", type=int, default=100, help="GIL switch interval")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    sys.setswitchinterval(args.switch_us / 1e6)
    from bertserve.malloc import keep_freed_memory

    keep_freed_memory(1 << 30)  # as `serve` does by default (--malloc-keep-mb)
    builds = {"this": _load(None)}
    if args.baseline_src is not None:
        builds["base"] = _load(args.baseline_src)
    requests = _requests(16384)
    rows: list[dict] = []
    for _ in range(args.rounds):  # builds alternate, so drift touches both alike
        for label, module in builds.items():
            alone = _time(module, requests, args.count)
            busy = _beside_busy(args.busy, lambda m=module: _time(m, requests, args.count))
            rows.append({"build": label, "alone": alone, "busy": busy})
    print(
        f"{len(requests)} requests of 4 rows a batch; Python {platform.python_version()}, "
        f"numpy {np.__version__}, switch interval {args.switch_us} us, {args.busy} busy thread(s)"
    )
    for row in rows:
        a, b = row["alone"], row["busy"]
        print(
            f"{row['build']:5s} pack {a['pack_ms']:6.2f} ms alone {b['pack_ms']:6.2f} beside busy"
            f" | unpack {a['unpack_ms']:6.2f} alone {b['unpack_ms']:6.2f} beside busy"
            f" | row_lengths a request {a['lengths_us']:6.1f} us alone {b['lengths_us']:6.1f}"
            " beside busy"
        )
    if args.out is not None:
        args.out.write_text(json.dumps({"requests": len(requests), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

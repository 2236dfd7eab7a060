"""The server's CPU side on a CPU: `bertserve serve` over the stand-in engine
(benchmarks/standin_backend.py), driven by the real perf_analyzer, builds side by side.

    python benchmarks/frontend_cpu.py --out bench-out \
        --variant 'before|/tmp/main-src|' --variant 'after||'

Each `--variant LABEL|SRC|FLAGS` is one server build: SRC a bertserve `src/` folder (empty:
this checkout's), FLAGS more `bertserve serve` flags. Every variant serves the same repository
(a packing and a padded stand-in, two instances each, one shared "device" per model) and is
measured at the same points, in turn; the server's own statistics give each batch's compute
input / infer / output, /proc the CPU of each server thread. The stand-in's device takes
0.55 ms + 0.4 us a token per pass (about the H200's fp16 packed engine), so what limits a
point here is the server, not the device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bertserve.launch import ServerProcess
from gpu_common import Results
from gpu_serving import Point, measure, workload_files

__all__ = ["main"]

HERE = Path(__file__).resolve().parent


def _config(name: str, packing: bool) -> str:
    preferred = "" if packing else "preferred_batch_size: [64, 128, 256] "
    text = (
        f'name: "{name}"\nbackend: "bertserve_standin"\nmax_batch_size: 256\n'
        f"dynamic_batching {{ {preferred}max_queue_delay_microseconds: 0 }}\n"
        "instance_group { count: 2 kind: KIND_CPU }\n"
    )
    return text + f'parameters {{ key: "packing" value {{ string_value: "{packing}" }} }}\n'


def write_repository(root: Path) -> Path:
    """The stand-ins `pk` (packing) and `pad`, and the QA pipeline `qa` over `pk` (as the
    GPU benchmark configures it: 8 instances, batches of 64 pairs, 64 windows a call)."""
    from google.protobuf import text_format

    from bertserve.backends.qa_pipeline import pipeline_config
    from bertserve.builder.vocabulary import write_generated_tokenizer

    for name, packing in (("pk", True), ("pad", False)):
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(_config(name, packing))
    tokenizer = root / "pk" / "1" / "tokenizer"
    if not tokenizer.exists():
        write_generated_tokenizer(tokenizer, 28996, 384)
    config = pipeline_config(
        "qa", "pk", {"max_windows_per_call": "64"}, max_batch_size=64, instances=8,
        max_queue_delay_us=2000,
    )  # fmt: skip
    (root / "qa" / "1").mkdir(parents=True, exist_ok=True)
    (root / "qa" / "config.pbtxt").write_text(text_format.MessageToString(config))
    return root


def points(data: dict[str, Path]) -> list[Point]:
    text = HERE.parent / "src/bertserve/data/qa_perf_input.json"
    return [
        Point("qa text -b8 c64", "qa", text, 8, 64),
        Point("pk mix -b4 c256", "pk", data["mix"], 4, 256, 384),
        Point("pad full384 -b4 c256", "pad", data["full"], 4, 256, 384),
        Point("pk own -b1 c1", "pk", data["own"], 1, 1),
        Point("pk own -b1 c64", "pk", data["own"], 1, 64),
        Point("pk mix -b64 c16", "pk", data["mix"], 64, 16, 384),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bertserve-frontend"))
    parser.add_argument("--variant", action="append", default=[], help="LABEL|SRC|FLAGS")
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--only", default="", help="labels of the points to run, comma-separated")
    args = parser.parse_args(argv)
    res = Results(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    repo = write_repository(args.work / "repo")
    data = workload_files(args.work, 512)
    wanted = [p for p in points(data) if not args.only or p.label in args.only.split(",")]
    for spec in args.variant or ["this||"]:
        label, src, flags = (spec.split("|") + ["", ""])[:3]
        path = [Path(src)] if src else []
        server = ServerProcess(
            repo, args=flags.split(), pythonpath=[*path, HERE / "standin_site"],
            log=args.out / f"server-{label}.log",
        ).start()  # fmt: skip
        try:
            address = server.address("http")
            for point in wanted:
                measure(res, label, address, point, [server.pid], args.window_ms)
        finally:
            server.stop()
    print("\n== summary")
    for line in res.table:
        print(line)
    for record in res.data.get("server", []):
        print(
            f"{record['topology']:10s} {record['label']:22s} "
            f"input {record['compute_input_us']:8.0f}"
            f" infer {record['compute_infer_us']:8.0f} output {record['compute_output_us']:8.0f}"
            f" us | cpu/req {record['server_cpu_us_per_request']:6.0f} us"
            f" | mean batch {record.get('mean_batch', 0):6.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the GPU benchmark's stages share: the results record, timers, random checkpoints and
engines loaded as the server loads them, and the realistic (SQuAD-like) rows.

`Target` says where the run happens: a GPU, or the CPU for a dry run of every code path with a
tiny model (`benchmarks/gpu.py --dry-run`), where precisions fall back to float32 and graphs
are off, as the engine does on a CPU.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from squad_workload import workload_rows  # noqa: E402

__all__ = [
    "Results",
    "Target",
    "free_engines",
    "load_engine",
    "median_ms",
    "realistic_rows",
    "stack_rows",
    "write_checkpoint",
]


@dataclass(frozen=True, slots=True)
class Target:
    """Where a run happens: a GPU (`gpu_id`) or, for the dry run, the CPU and a tiny model."""

    dry_run: bool = False
    gpu_id: int = 0
    vocab: int = 28996

    @property
    def device(self) -> Any:
        from bertserve.backends.base import Device

        return Device("cpu") if self.dry_run else Device("gpu", self.gpu_id)

    @property
    def kind(self) -> str:
        return "KIND_CPU" if self.dry_run else "KIND_GPU"

    def sync(self) -> None:
        if not self.dry_run:
            import torch

            torch.cuda.synchronize()


@dataclass
class Results:
    """Everything a run measured; written as gpu.json, with a short table printed last."""

    out: Path
    data: dict[str, Any] = field(default_factory=lambda: {"notes": []})
    table: list[str] = field(default_factory=list)

    def add(self, section: str, record: Mapping[str, Any]) -> None:
        self.data.setdefault(section, []).append(dict(record))
        self.save()

    def put(self, section: str, value: Any) -> None:
        self.data[section] = value
        self.save()

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.data["notes"].append(text)
        self.save()

    def line(self, text: str) -> None:
        """A line of the final table (also printed now)."""
        print(text, flush=True)
        self.table.append(text)

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu.json").write_text(json.dumps(self.data, indent=1, default=str))

    def stage(self, name: str, fn: Callable[[], None]) -> None:
        """Run one stage; a failure is noted and the run goes on to the next."""
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one stage failing must not lose the others
            import traceback

            traceback.print_exc()
            self.note(f"stage {name} failed: {type(exc).__name__}: {exc}"[:2000])
        self.data.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - started, 1)
        self.save()


def environment(target: Target) -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "dry_run": target.dry_run,
        "python_loop_us": _python_speed(),
    }
    if not target.dry_run:
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
    return env


def _python_speed() -> float:
    """Microseconds for 100,000 additions in a Python loop, the best of five: the host's
    single-thread speed, which the server's front end and the QA pipeline follow (H200 hosts
    of one device kind differ here)."""
    import timeit

    return min(timeit.repeat("for i in range(100_000): x += i", "x = 0", number=1, repeat=5)) * 1e6


def median_ms(fn: Callable[[], Any], reps: int, target: Target, warmup: int = 3) -> float:
    """Median milliseconds of fn(): CUDA events on a GPU, the wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    target.sync()
    times = []
    if target.dry_run:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)
    import torch

    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def write_checkpoint(root: Path, name: str, target: Target, seed: int = 0) -> Path:
    """A random BERT-base QA checkpoint (a tiny BERT in the dry run) as `bertserve build`
    writes one; the QA head is spread so that argmax on random weights is decided."""
    import torch
    import transformers

    if target.dry_run:
        cfg = transformers.BertConfig(
            vocab_size=target.vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=512,
        )  # fmt: skip
    else:
        cfg = transformers.BertConfig(vocab_size=target.vocab)
    torch.manual_seed(seed)
    model = transformers.BertForQuestionAnswering(cfg)
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0, 0.5)
    vdir = root / name / "1"
    vdir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(vdir), safe_serialization=True)
    return vdir


def load_engine(vdir: Path, params: Mapping[str, str], mbs: int, target: Target) -> Any:
    """A TorchInstance loaded exactly as the server loads one."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from bertserve.backends.base import LoadContext
    from bertserve.backends.torch import TorchBackend

    text = f'name: "m" backend: "bertserve_torch" max_batch_size: {mbs} '
    for k, v in params.items():
        text += f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }} '
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    backend = TorchBackend()
    backend.autocomplete(config, vdir)
    return backend.load(config, vdir, target.device, LoadContext("m", 1))


def free_engines() -> None:
    import torch

    from bertserve.backends.torch import weights as torch_weights

    torch_weights._weights.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def realistic_rows(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """SQuAD-like windows, each padded to 384 with its mask (benchmarks/squad_workload.py)."""
    return workload_rows(count, seed, 384)


def stack_rows(
    rows: list[dict[str, np.ndarray]], width: int | None = None
) -> dict[str, np.ndarray]:
    """Rows as one [rows, width] request (width: the longest row's mask by default)."""
    if width is None:
        width = max(int(r["attention_mask"].sum()) for r in rows)
    return {name: np.stack([r[name][:width] for r in rows]) for name in rows[0]}

"""Packed (variable-length) attention kernels side by side on one batch of the SQuAD mix:
the rows the token batcher forms at a 32k budget, q/k/v (tokens, 12 heads, 64) in the
engine's activation dtype, `cu_seqlens` with the graph's row capacity (empty rows past the
last). Each kernel: its largest difference from FlashAttention-2's output over the real
tokens, and its time as a CUDA graph replays it (median of 50), in TFLOP/s of the rows'
real attention work (4 x sum(L^2) x hidden)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gpu_common import Results, Target, median_ms, realistic_rows

__all__ = ["compare"]


def _batch(budget: int, capacity: int) -> list[int]:
    """The row lengths the token batcher takes from the mix at `budget` tokens."""
    from gpu_engine import _fill

    rows = _fill(realistic_rows(4096, seed=3), budget, capacity)
    return [int(r["attention_mask"].sum()) for r in rows]


def _kernels() -> dict[str, Callable[..., Any]]:
    import torch

    aten = torch.ops.aten

    def flash(q: Any, k: Any, v: Any, cu: Any, m: int) -> Any:
        return aten._flash_attention_forward(q, k, v, cu, cu, m, m, 0.0, False, False)[0]

    def cudnn(q: Any, k: Any, v: Any, cu: Any, m: int) -> Any:
        return aten._cudnn_attention_forward(q, k, v, None, cu, cu, m, m, False, 0.0, False)[0]

    def efficient(q: Any, k: Any, v: Any, cu: Any, m: int) -> Any:
        out = aten._efficient_attention_forward(
            q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), None, cu, cu, m, m, 0.0, 0
        )
        return out[0].squeeze(0)

    kernels: dict[str, Callable[..., Any]] = {
        "flash": flash, "cudnn": cudnn, "efficient": efficient,
    }  # fmt: skip
    from bertserve.backends.torch.varlen_attention import triton_varlen_attention

    for bm, bn, warps, stages in TRITON_SHAPES:
        kernels[f"triton {bm}x{bn} w{warps} s{stages}"] = (
            lambda q, k, v, cu, m, bm=bm, bn=bn, w=warps, st=stages: triton_varlen_attention(
                q, k, v, cu, m, bm, bn, w, st
            )
        )
    return kernels


#: (block_m, block_n, num_warps, num_stages) of the Triton kernel to time.
TRITON_SHAPES = (
    (64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2), (128, 64, 4, 2), (128, 64, 8, 2),
    (128, 32, 4, 2), (32, 64, 2, 2), (64, 128, 4, 2),
)  # fmt: skip


def compare(res: Results, target: Target, dtype_name: str = "bfloat16") -> None:
    import torch

    dev = torch.device("cpu" if target.dry_run else f"cuda:{target.gpu_id}")
    dtype = getattr(torch, dtype_name)
    budget, capacity = (2048, 32) if target.dry_run else (32768, 256)
    lengths = _batch(budget, capacity)
    n = sum(lengths)
    cu_host = np.full(capacity + 1, n, np.int32)
    cu_host[0] = 0
    np.cumsum(lengths, out=cu_host[1 : len(lengths) + 1])
    cu = torch.from_numpy(cu_host).to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    # Views into one fused QKV tensor, as the encoder's projection leaves them.
    qkv = torch.randn(n, 3, 12, 64, generator=gen, device=dev, dtype=dtype)
    q, k, v = qkv.unbind(1)
    flops = 4 * sum(x * x for x in lengths) * 768
    record: dict[str, Any] = {"rows": len(lengths), "tokens": n, "capacity": capacity,
                              "dtype": dtype_name, "gflop": flops / 1e9}  # fmt: skip
    reference = None
    for name, fn in _kernels().items():
        entry: dict[str, Any] = {}
        try:
            out = fn(q, k, v, cu, 384)
            if reference is None:
                reference = out.float()
            entry["max_diff"] = float((out.float() - reference).abs().max())
            ms = median_ms(lambda f=fn: f(q, k, v, cu, 384), 50, target)
            entry["eager_ms"] = ms
            if dev.type == "cuda":
                graph = torch.cuda.CUDAGraph()
                static = torch.cuda.Stream()
                with torch.cuda.stream(static):
                    fn(q, k, v, cu, 384)
                torch.cuda.synchronize()
                with torch.cuda.graph(graph, stream=static):
                    captured = fn(q, k, v, cu, 384)
                graph.replay()
                torch.cuda.synchronize()
                entry["graph_max_diff"] = float((captured.float() - reference).abs().max())
                entry["graph_ms"] = median_ms(graph.replay, 50, target)
                entry["tflops"] = flops / entry["graph_ms"] / 1e9
        except Exception as exc:  # noqa: BLE001 - a kernel this build lacks is a result too
            entry["error"] = f"{type(exc).__name__}: {exc}"[:400]
        record[name] = entry
    res.put(f"attention {dtype_name}", record)

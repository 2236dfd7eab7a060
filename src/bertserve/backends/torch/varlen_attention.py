"""Attention over packed rows in Triton, tiled for short rows.

FlashAttention-2 as PyTorch ships it works in 128 x 128 tiles: a row of 150 tokens costs
two tiles each way, 4 x 128^2 = 65,536 score cells for 22,500 real ones, and the SQuAD mix's
rows average 156 tokens. Smaller tiles (64 x 64: 9 x 64^2 = 36,864 cells for that row) waste
less of a row. One program computes one tile of queries of one row and head, looping over
the row's keys with an online softmax (exp2, fp32 accumulators); programs past a row's end
return at once, so one launch shape (a graph's row capacity) serves every mix of lengths.

q, k, v: (tokens, heads, head_dim) with any token and head strides (views into the fused
QKV projection); `cu_seqlens` (rows + 1,) int32 on the device. Triton on CUDA only: the
torch fallback is attention.packed_attention's row loop.

Measured on an H200 (docs/gpu-notes.md, round 4; bf16, the 215 rows a 32k-token budget
takes from the SQuAD mix): 0.126 ms a layer in 64 x 64 tiles, 4 warps, 3 stages, against
0.201 ms for FlashAttention-2 (151 vs 95 TFLOP/s of real attention work); 128 x 64 tiles
0.144-0.148 ms, 64 x 32 0.128 ms, 32 x 64 0.251 ms."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["triton_varlen_attention"]


@functools.cache
def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit  # type: ignore[untyped-decorator]
    def varlen_fwd(  # type: ignore[no-untyped-def]
        Q, K, V, Out, CU, scale,
        stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
        HEAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ):  # fmt: skip
        tile = tl.program_id(0)
        row = tl.program_id(1)
        head = tl.program_id(2)
        bounds = tl.load(CU + row + tl.arange(0, 2))  # (offsets never decrease)
        start = tl.min(bounds, 0)
        length = tl.max(bounds, 0) - start
        if tile * BLOCK_M >= length:
            return
        offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD)
        live_m = offs_m[:, None] < length
        q_ptr = Q + (start + offs_m[:, None]) * stride_qt + head * stride_qh + offs_d[None, :]
        q = tl.load(q_ptr, mask=live_m, other=0.0)
        k_base = K + start * stride_kt + head * stride_kh + offs_d[None, :]
        v_base = V + start * stride_vt + head * stride_vh + offs_d[None, :]
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD], tl.float32)
        qk_scale = scale * 1.4426950408889634  # exp(x) = exp2(x * log2(e))
        for n0 in range(0, length, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            live_n = offs_n < length
            k = tl.load(k_base + offs_n[:, None] * stride_kt, mask=live_n[:, None], other=0.0)
            v = tl.load(v_base + offs_n[:, None] * stride_vt, mask=live_n[:, None], other=0.0)
            qk = tl.dot(q, tl.trans(k)) * qk_scale
            qk = tl.where(live_n[None, :], qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.math.exp2(qk - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        acc = acc / l_i[:, None]
        o_ptr = Out + (start + offs_m[:, None]) * stride_ot + head * stride_oh + offs_d[None, :]
        tl.store(o_ptr, acc.to(Out.dtype.element_ty), mask=live_m)

    return varlen_fwd


def triton_varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_len: int,
    block_m: int = 64,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 3,
) -> torch.Tensor:
    """Attention within each packed row (see the module's docstring); returns (tokens,
    heads, head_dim) contiguous, tokens past cu_seqlens[-1] left unspecified."""
    import torch

    tokens, heads, dim = q.shape
    out = torch.empty((tokens, heads, dim), dtype=q.dtype, device=q.device)
    rows = cu_seqlens.shape[0] - 1
    grid = ((max_len + block_m - 1) // block_m, rows, heads)
    _kernel()[grid](
        q, k, v, out, cu_seqlens, dim**-0.5,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1),
        HEAD=dim, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out

"""Fused elementwise kernels for the torch encoder: Triton on CUDA, plain torch elsewhere.

Where a BERT layer's time goes besides its four GEMMs and attention is memory traffic:
residual add + LayerNorm (twice a layer) and GELU. These kernels make each of those one pass
over the activations, and, for the FP8 path, also write the row-wise FP8 copy (and its
per-row scale) that the next GEMM reads, so activation quantization costs no extra pass.

Every function has a torch fallback with the same math, used on CPU (the tests) and when
Triton is missing; `triton_available()` says which one runs.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "FP8_MAX",
    "add_layer_norm",
    "bias_gelu_quant",
    "quantize_rows",
    "triton_available",
]

#: Largest finite float8_e4m3fn value.
FP8_MAX = 448.0
_SQRT1_2 = 1.0 / math.sqrt(2.0)


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "use torch"
        return False
    return True


@functools.cache
def _kernels() -> dict[str, Any]:
    import triton
    import triton.language as tl

    # Device code: Triton reads these parameters' annotations itself (tl.constexpr marks
    # compile-time values, the rest are pointers and scalars it specializes on), so they carry
    # no Python types and mypy is told so, kernel by kernel.
    @triton.jit  # type: ignore[untyped-decorator]
    def add_ln_kernel(  # type: ignore[no-untyped-def]
        X, R, W, B, Y, Q, QS, N, eps,
        stride_x, stride_r, stride_y,
        BLOCK: tl.constexpr, HAS_RES: tl.constexpr, QUANT: tl.constexpr,
    ):  # fmt: skip
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        m = cols < N
        x = tl.load(X + row * stride_x + cols, mask=m, other=0.0).to(tl.float32)
        if HAS_RES:
            x += tl.load(R + row * stride_r + cols, mask=m, other=0.0).to(tl.float32)
        mean = tl.sum(x, 0) / N
        d = tl.where(m, x - mean, 0.0)
        var = tl.sum(d * d, 0) / N
        w = tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
        b = tl.load(B + cols, mask=m, other=0.0).to(tl.float32)
        y = d * tl.rsqrt(var + eps) * w + b
        tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=m)
        if QUANT:
            amax = tl.maximum(tl.max(tl.abs(y), 0), 1e-6)
            tl.store(Q + row * N + cols, (y * (448.0 / amax)).to(Q.dtype.element_ty), mask=m)
            tl.store(QS + row, amax / 448.0)

    @triton.jit
    def tanh_approx(x):  # type: ignore[no-untyped-def]
        # One MUFU instruction instead of a libdevice polynomial: the GELU + quantize pass
        # over the 4h-wide FFN activations is otherwise bound by ALU work, not bytes.
        return tl.inline_asm_elementwise(
            "tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
        )

    @triton.jit  # type: ignore[untyped-decorator]
    def act_quant_kernel(  # type: ignore[no-untyped-def]
        X, BIAS, Q, QS, N, stride_x,
        BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
    ):  # fmt: skip
        # GELU: 0 none, 1 erf (exact), 2 tanh approximation (what cuBLASLt's epilogue uses).
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        m = cols < N
        x = tl.load(X + row * stride_x + cols, mask=m, other=0.0).to(tl.float32)
        if HAS_BIAS:
            x += tl.load(BIAS + cols, mask=m, other=0.0).to(tl.float32)
        if GELU == 1:
            x = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
        if GELU == 2:
            x = 0.5 * x * (1.0 + tanh_approx(0.7978845608028654 * (x + 0.044715 * x * x * x)))
        amax = tl.maximum(tl.max(tl.abs(x), 0), 1e-6)
        tl.store(Q + row * N + cols, (x * (448.0 / amax)).to(Q.dtype.element_ty), mask=m)
        tl.store(QS + row, amax / 448.0)

    return {
        "add_ln": add_ln_kernel,
        "act_quant": act_quant_kernel,
        "next_pow2": triton.next_power_of_2,
    }


def _warps(block: int) -> int:
    return 4 if block <= 1024 else 8


def _use_triton(x: torch.Tensor, use_triton: bool) -> bool:
    return use_triton and x.is_cuda and triton_available()


def add_layer_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    *,
    quantize: bool = False,
    use_triton: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """LayerNorm(x + residual) over the last axis of 2-D (rows, N) tensors, in one pass.

    Returns (y, q, scale): y in x's dtype; with `quantize`, q = y / scale as float8_e4m3fn
    and scale (rows, 1) float32 = max|y| / 448 per row (else None, None).
    """
    import torch
    import torch.nn.functional as F

    if not _use_triton(x, use_triton):
        h = x if residual is None else x + residual
        y = F.layer_norm(h.float(), (h.shape[-1],), weight.float(), bias.float(), eps)
        q = s = None
        if quantize:
            q, s = _quantize_rows_torch(y)
        return y.to(x.dtype), q, s
    k = _kernels()
    rows, n = x.shape
    block = k["next_pow2"](n)
    y = torch.empty_like(x)
    q = torch.empty((rows, n), dtype=torch.float8_e4m3fn, device=x.device) if quantize else y
    s = torch.empty((rows, 1), dtype=torch.float32, device=x.device) if quantize else y
    res = residual if residual is not None else x
    k["add_ln"][(rows,)](
        x, res, weight, bias, y, q, s, n, eps,
        x.stride(0), res.stride(0), y.stride(0),
        BLOCK=block, HAS_RES=residual is not None, QUANT=quantize, num_warps=_warps(block),
    )  # fmt: skip
    return y, (q if quantize else None), (s if quantize else None)


def bias_gelu_quant(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    approximate: str = "none",
    use_triton: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 row-wise copy of GELU(x + bias): (q, scale (rows, 1)). `approximate` as in
    F.gelu: "none" (erf, as BERT defines it) or "tanh"."""
    return _act_quant(x, bias, gelu=2 if approximate == "tanh" else 1, use_triton=use_triton)


def quantize_rows(x: torch.Tensor, *, use_triton: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 row-wise copy of x: (q, scale (rows, 1)), q * scale ~ x."""
    return _act_quant(x, None, gelu=0, use_triton=use_triton)


def _act_quant(
    x: torch.Tensor, bias: torch.Tensor | None, *, gelu: int, use_triton: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch
    import torch.nn.functional as F

    if not _use_triton(x, use_triton):
        h = x.float() if bias is None else x.float() + bias.float()
        if gelu:
            h = F.gelu(h, approximate="tanh" if gelu == 2 else "none")
        return _quantize_rows_torch(h)
    k = _kernels()
    rows, n = x.shape
    block = k["next_pow2"](n)
    q = torch.empty((rows, n), dtype=torch.float8_e4m3fn, device=x.device)
    s = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    k["act_quant"][(rows,)](
        x, bias if bias is not None else x, q, s, n, x.stride(0),
        BLOCK=block, HAS_BIAS=bias is not None, GELU=gelu, num_warps=_warps(block),
    )  # fmt: skip
    return q, s


def _quantize_rows_torch(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    y = y.float()
    s = y.abs().amax(dim=-1, keepdim=True).clamp_min(1e-6) / FP8_MAX
    q = (y / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, s

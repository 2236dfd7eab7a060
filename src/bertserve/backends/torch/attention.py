"""Attention kernels of the encoder: padded batches through SDPA, packed rows through
variable-length kernels.

Padded: (batch, heads, seq, head_dim) through `F.scaled_dot_product_attention`, whose
kernel (flash, cuDNN, memory-efficient, math) can be forced for unmasked batches.

Packed: the rows of a batch back to back, (tokens, heads, head_dim), with `cu_seqlens`
row offsets; each token attends within its own row only. On CUDA this is FlashAttention-2's
variable-length kernel as PyTorch ships it: the row offsets stay on the device, so one CUDA
graph serves every mix of lengths with the same token and row capacity. On CPU (the tests,
float32) each row runs through SDPA in turn: same math.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["ATTENTION_BACKENDS", "PACKED_ATTENTION", "packed_attention", "padded_attention"]

ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")
#: Kernels for packed rows on CUDA (`packed_attention` parameter): this package's Triton
#: kernel (varlen_attention.py) or PyTorch's FlashAttention-2. (cuDNN's variable-length
#: attention, `aten._cudnn_attention_forward`, was measured and left out: 42 ms a call
#: outside a graph on PyTorch 2.11, and it cannot be captured in one.)
PACKED_ATTENTION = ("triton", "flash")


def padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, name: str
) -> torch.Tensor:
    """SDPA over (batch, heads, seq, head_dim); `name` forces a kernel for unmasked batches
    (masked ones always let PyTorch choose: flash and cuDNN take no mask)."""
    import torch.nn.functional as F

    if name == "auto" or bias is not None and name in ("flash", "cudnn"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]
    with sdpa_kernel([backend]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def packed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_len: int,
    kernel: str = "flash",
) -> torch.Tensor:
    """Attention within each packed row: q, k, v (tokens, heads, head_dim), `cu_seqlens`
    (rows + 1,) int32 offsets, `max_len` at least the longest row, `kernel` one of
    PACKED_ATTENTION (CUDA; on CPU rows run through SDPA in turn). Returns (tokens, heads,
    head_dim); rows past cu_seqlens[-1] are left unspecified (a bucket's slack)."""
    import torch

    if not q.is_cuda:
        return _packed_attention_rowwise(q, k, v, cu_seqlens)
    if kernel == "triton":
        from bertserve.backends.torch.varlen_attention import triton_varlen_attention

        return triton_varlen_attention(q, k, v, cu_seqlens, max_len)
    # (query, key, value, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p, is_causal,
    #  return_debug_mask): positional, the part of the signature every PyTorch 2.x shares.
    # torch.ops are resolved at run time: their results are untyped.
    context: torch.Tensor = torch.ops.aten._flash_attention_forward(
        q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, 0.0, False, False
    )[0]
    return context


def _packed_attention_rowwise(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor
) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    out = torch.zeros_like(q)
    bounds = cu_seqlens.tolist()
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        if stop > start:
            qr, kr, vr = (t[start:stop].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            out[start:stop] = F.scaled_dot_product_attention(qr, kr, vr)[0].transpose(0, 1)
    return out

"""The `bertserve_torch` backend: BERT QA from model.safetensors on a GPU, engine-style.

At load time each instance prepares its "engine": for every optimization profile, a
(batch bucket, sequence bucket) pair, it captures CUDA graphs of the whole forward pass
(one without an attention mask, the fastest kernels, and one with), on the instance's own
CUDA stream. A request batch is padded to the smallest profile that fits and replayed;
`batch_buckets` tells the dynamic batcher which sizes run natively.

With `packing: true` there is no padding: rows are trimmed to their attention masks and
packed back to back (requests of different lengths in one batch, formed by a token budget),
and the graphs are captured per token bucket instead (see docs/architecture.md,
"Variable-length batching").

config.pbtxt parameters (all optional, string values):

| key | default | meaning |
|---|---|---|
| precision | fp16 (GPU), fp32 (CPU) | fp16, bf16, fp32 or fp8 (FP8 GEMMs, bf16 elsewhere) |
| batch_buckets | 1, 4, 16, ... up to max_batch_size | batch sizes of the profiles |
| seq_buckets | input length, else 128,384 | profile lengths; the last is the longest row |
| cuda_graphs | true | capture a graph per profile (GPU only) |
| attention | auto | SDPA kernel for unmasked batches: auto, flash, cudnn, efficient, math |
| packed_attention | triton | packing: triton (small tiles) or flash (FlashAttention-2) |
| gelu | erf | erf, or tanh (bias+GELU in the GEMM epilogue) |
| fused_layernorm | true | Triton residual-add + LayerNorm kernel on CUDA |
| fp8_fast_accum | true | FP8 GEMMs accumulate in the tensor cores' fast (less exact) mode |
| packing | false | variable-length batching: real tokens only, a token-budget batcher |
| max_tokens | min(32768, max_batch_size x longest row) | packing: tokens of one batch |
| token_buckets | 128, 256, 384, 512, 768, ... up to max_tokens | packing: graph sizes |

Inputs `input_ids`, `attention_mask`, `token_type_ids` (INT64, [-1]; DistilBERT has no
token_type_ids); outputs `start_logits`, `end_logits` (FP32, [-1]).

Modules: `backend` (the Backend: autocomplete, load), `settings` (EngineSettings read from
the config), `buckets` (pure batch, sequence and token bucket arithmetic), `weights` (one
copy of the weights per model and device), `profile` (one (batch, seq) profile: buffers,
graphs, staging slots), `packed` (one token bucket of a packing instance), `instance` (the
ModelInstance that launches batches), `encoder` (the BERT encoder in torch ops),
`attention` (padded SDPA, packed variable-length attention), `varlen_attention` (the
Triton kernel for packed rows) and `kernels` (Triton elementwise kernels). torch is
imported only when a model loads.
"""

from __future__ import annotations

from bertserve.backends.torch.backend import TorchBackend
from bertserve.backends.torch.buckets import default_batch_buckets, pick_bucket, plan_chunks
from bertserve.backends.torch.instance import TorchInstance
from bertserve.backends.torch.settings import EngineSettings

__all__ = [
    "EngineSettings",
    "TorchBackend",
    "TorchInstance",
    "default_batch_buckets",
    "pick_bucket",
    "plan_chunks",
]

"""BERT / DistilBERT extractive-QA forward pass written directly with torch ops.

Not transformers' module tree: one fused QKV projection per layer, attention through
`F.scaled_dot_product_attention` (flash / cuDNN / memory-efficient kernels), residual add +
LayerNorm as one fused pass (Triton on CUDA), optionally GELU in the GEMM epilogue
(cuBLASLt, tanh approximation) and optionally FP8 GEMMs (`torch._scaled_mm`, row-wise
activation scales, per-output-channel weight scales) with the activations' FP8 copies
written by the fused kernels. The same code runs on CPU in float32, which is how the tests
check it against transformers.

Weights come from a Hugging Face `BertForQuestionAnswering` / `DistilBertForQuestionAnswering`
state dict (safetensors) and its `config.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertserve.backends.torch.attention import (
    ATTENTION_BACKENDS,
    PACKED_ATTENTION,
    packed_attention,
    padded_attention,
)
from bertserve.backends.torch.kernels import add_layer_norm, bias_gelu_quant, quantize_rows
from bertserve.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["EncoderConfig", "EncoderOptions", "QAEncoder", "load_encoder"]

PRECISIONS = ("fp32", "fp16", "bf16", "fp8")
GELU_MODES = ("erf", "tanh")


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    """The architecture, read from a Hugging Face config.json."""

    kind: str  # "bert" | "distilbert"
    vocab: int
    hidden: int
    heads: int
    layers: int
    intermediate: int
    max_positions: int
    type_vocab: int  # 0: no token-type embeddings (DistilBERT)
    eps: float

    @classmethod
    def from_hf(cls, cfg: Mapping[str, Any]) -> EncoderConfig:
        model_type = cfg.get("model_type", "bert")
        act = cfg.get("hidden_act", cfg.get("activation", "gelu"))
        if act != "gelu":
            raise ConfigError(f"config.json activation '{act}': the torch backend serves 'gelu'")
        if model_type == "distilbert":
            return cls(
                kind="distilbert",
                vocab=int(cfg["vocab_size"]),
                hidden=int(cfg["dim"]),
                heads=int(cfg["n_heads"]),
                layers=int(cfg["n_layers"]),
                intermediate=int(cfg["hidden_dim"]),
                max_positions=int(cfg.get("max_position_embeddings", 512)),
                type_vocab=0,
                eps=1e-12,
            )
        if model_type != "bert":
            raise ConfigError(
                f"config.json model_type '{model_type}': the torch backend serves bert and "
                "distilbert question-answering checkpoints"
            )
        return cls(
            kind="bert",
            vocab=int(cfg["vocab_size"]),
            hidden=int(cfg["hidden_size"]),
            heads=int(cfg["num_attention_heads"]),
            layers=int(cfg["num_hidden_layers"]),
            intermediate=int(cfg["intermediate_size"]),
            max_positions=int(cfg.get("max_position_embeddings", 512)),
            type_vocab=int(cfg.get("type_vocab_size", 2)),
            eps=float(cfg.get("layer_norm_eps", 1e-12)),
        )

    def flops_per_sequence(self, seq: int) -> float:
        """2 x matmul parameters x tokens + QK^T and AV (the count used in the notes)."""
        h, f = self.hidden, self.intermediate
        per_token = 2 * (4 * h * h + 2 * h * f) + 2 * 2 * seq * h
        return float(self.layers * per_token * seq + 2 * 2 * h * seq)


@dataclass(frozen=True, slots=True)
class EncoderOptions:
    """How to compute: precision, GELU form, attention kernel, fused LayerNorm."""

    precision: str = "fp16"
    gelu: str = "erf"  # "tanh": bias + GELU in the cuBLASLt epilogue (tanh approximation)
    attention: str = "auto"  # SDPA backend for unmasked batches; masked ones use "auto"
    packed_attention: str = "flash"  # the kernel for packed rows (PACKED_ATTENTION)
    fused_layernorm: bool = True  # Triton add+LayerNorm on CUDA when Triton imports
    fp8_fast_accum: bool = True

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("precision", self.precision, PRECISIONS),
            ("gelu", self.gelu, GELU_MODES),
            ("attention", self.attention, ATTENTION_BACKENDS),
            ("packed_attention", self.packed_attention, PACKED_ATTENTION),
        ):
            if value not in allowed:
                raise ConfigError(f"parameter {name} '{value}' is not one of {', '.join(allowed)}")

    @property
    def activation_dtype(self) -> torch.dtype:
        import torch

        return {
            "fp32": torch.float32,
            "fp16": torch.float16,
            "bf16": torch.bfloat16,
            # _scaled_mm with row-wise scales writes bf16.
            "fp8": torch.bfloat16,
        }[self.precision]


@dataclass(slots=True)
class _Linear:
    weight: torch.Tensor  # (out, in), activation dtype
    bias: torch.Tensor
    qweight_t: torch.Tensor | None = None  # (in, out) column-major float8 view, FP8 only
    wscale: torch.Tensor | None = None  # (1, out) float32


@dataclass(slots=True)
class _Layer:
    qkv: _Linear
    out: _Linear
    ln1: tuple[torch.Tensor, torch.Tensor]
    ffn1: _Linear
    ffn2: _Linear
    ln2: tuple[torch.Tensor, torch.Tensor]


@dataclass(slots=True)
class QAEncoder:
    """Weights on one device plus the forward pass. Not an nn.Module: nothing to train."""

    config: EncoderConfig
    options: EncoderOptions
    device: torch.device
    word: torch.Tensor
    position: torch.Tensor
    token_type: torch.Tensor | None
    emb_ln: tuple[torch.Tensor, torch.Tensor]
    layers: list[_Layer]
    qa: _Linear
    _bias_ok: dict[str, bool] = field(default_factory=dict)

    # ---- forward -------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Logits (2, batch, seq) float32: [0] start, [1] end. A None mask means "attend to
        every position" and lets SDPA use its unmasked (fastest) kernels."""
        import torch
        import torch.nn.functional as F

        b, s = input_ids.shape
        h, heads = self.config.hidden, self.config.heads
        dtype = self.options.activation_dtype
        bias = None
        if attention_mask is not None:
            bias = (1.0 - attention_mask.to(dtype)) * torch.finfo(dtype).min
            bias = bias.view(b, 1, 1, s)

        def attend(qkv: torch.Tensor) -> torch.Tensor:
            q, k, v = qkv.view(b, s, 3, heads, h // heads).permute(2, 0, 3, 1, 4).unbind(0)
            ctx = padded_attention(q, k, v, bias, self.options.attention)
            return ctx.transpose(1, 2).reshape(b * s, h)

        e = self._embed(input_ids, self.position[:s], token_type_ids)
        x = self._encode(e.view(b * s, h), attend)
        logits = F.linear(x, self.qa.weight, self.qa.bias).view(b, s, 2)
        return logits.permute(2, 0, 1).float()

    def forward_packed(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        positions: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_len: int,
    ) -> torch.Tensor:
        """Logits (2, tokens) float32 of packed rows: 1-D `input_ids`, `token_type_ids` and
        `positions` (each token's index in its row), `cu_seqlens` (rows + 1,) int32 row
        offsets, `max_len` the longest row allowed. Every GEMM runs over the real tokens
        only; attention stays within each row (variable-length kernels). Tokens past
        cu_seqlens[-1] (a bucket's slack) are computed row by row and never attend."""
        import torch.nn.functional as F

        tokens = input_ids.shape[0]
        h, heads = self.config.hidden, self.config.heads

        def attend(qkv: torch.Tensor) -> torch.Tensor:
            q, k, v = qkv.view(tokens, 3, heads, h // heads).unbind(1)
            ctx = packed_attention(q, k, v, cu_seqlens, max_len, self.options.packed_attention)
            return ctx.reshape(tokens, h)

        e = self._embed(input_ids, F.embedding(positions, self.position), token_type_ids)
        x = self._encode(e, attend)
        return F.linear(x, self.qa.weight, self.qa.bias).t().float()

    def _embed(
        self, input_ids: torch.Tensor, position: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        import torch.nn.functional as F

        e = F.embedding(input_ids, self.word) + position
        if self.token_type is not None:
            if token_type_ids is None:
                e = e + self.token_type[0]
            else:
                e = e + F.embedding(token_type_ids, self.token_type)
        return e

    def _encode(
        self, e: torch.Tensor, attend: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Embedding LayerNorm and the layers over (rows, hidden) activations; `attend`
        maps each layer's fused QKV (rows, 3 x hidden) to its context (rows, hidden)."""
        import torch.nn.functional as F

        cfg, opt = self.config, self.options
        fp8 = opt.precision == "fp8"
        tri = opt.fused_layernorm
        x, xq, xs = add_layer_norm(e, None, *self.emb_ln, cfg.eps, quantize=fp8, use_triton=tri)
        for layer in self.layers:
            ctx = attend(self._linear(layer.qkv, x, xq, xs, "qkv"))
            cq, cs = quantize_rows(ctx, use_triton=tri) if fp8 else (None, None)
            a = self._linear(layer.out, ctx, cq, cs, "out")
            x, xq, xs = add_layer_norm(a, x, *layer.ln1, cfg.eps, quantize=fp8, use_triton=tri)
            if fp8:
                assert layer.ffn1.qweight_t is not None and layer.ffn1.wscale is not None
                assert xq is not None and xs is not None  # add_layer_norm(quantize=True)
                pre = self._scaled_mm(xq, xs, layer.ffn1, None)
                approx = "tanh" if opt.gelu == "tanh" else "none"
                gq, gs = bias_gelu_quant(pre, layer.ffn1.bias, approximate=approx, use_triton=tri)
                o = self._linear(layer.ffn2, None, gq, gs, "ffn2")
            else:
                g = self._linear_gelu(layer.ffn1, x)
                o = F.linear(g, layer.ffn2.weight, layer.ffn2.bias)
            x, xq, xs = add_layer_norm(o, x, *layer.ln2, cfg.eps, quantize=fp8, use_triton=tri)
        return x

    def _linear(
        self,
        lin: _Linear,
        x: torch.Tensor | None,
        xq: torch.Tensor | None,
        xs: torch.Tensor | None,
        name: str,
    ) -> torch.Tensor:
        import torch.nn.functional as F

        if xq is not None and xs is not None and lin.qweight_t is not None:
            return self._scaled_mm(xq, xs, lin, lin.bias, name)
        assert x is not None
        return F.linear(x, lin.weight, lin.bias)

    def _scaled_mm(
        self,
        xq: torch.Tensor,
        xs: torch.Tensor,
        lin: _Linear,
        bias: torch.Tensor | None,
        name: str = "",
    ) -> torch.Tensor:
        import torch

        dtype = self.options.activation_dtype
        fast = self.options.fp8_fast_accum
        assert lin.qweight_t is not None and lin.wscale is not None
        if bias is not None and self._bias_ok.get(name, True):
            try:
                return torch._scaled_mm(
                    xq, lin.qweight_t, xs, lin.wscale, bias=bias, out_dtype=dtype,
                    use_fast_accum=fast,
                )  # fmt: skip
            except RuntimeError:
                self._bias_ok[name] = False
        y = torch._scaled_mm(
            xq, lin.qweight_t, xs, lin.wscale, out_dtype=dtype, use_fast_accum=fast
        )
        return y if bias is None else y + bias

    def _linear_gelu(self, lin: _Linear, x: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if self.options.gelu == "tanh":
            return torch._addmm_activation(lin.bias, x, lin.weight.t(), use_gelu=True)
        return F.gelu(F.linear(x, lin.weight, lin.bias))


# ---- loading ---------------------------------------------------------------------------------
_PREFIX = {"bert": "bert.", "distilbert": "distilbert."}


def _names(cfg: EncoderConfig, i: int) -> dict[str, str]:
    if cfg.kind == "bert":
        p = f"encoder.layer.{i}."
        return {
            "q": p + "attention.self.query",
            "k": p + "attention.self.key",
            "v": p + "attention.self.value",
            "out": p + "attention.output.dense",
            "ln1": p + "attention.output.LayerNorm",
            "ffn1": p + "intermediate.dense",
            "ffn2": p + "output.dense",
            "ln2": p + "output.LayerNorm",
        }
    p = f"transformer.layer.{i}."
    return {
        "q": p + "attention.q_lin",
        "k": p + "attention.k_lin",
        "v": p + "attention.v_lin",
        "out": p + "attention.out_lin",
        "ln1": p + "sa_layer_norm",
        "ffn1": p + "ffn.lin1",
        "ffn2": p + "ffn.lin2",
        "ln2": p + "output_layer_norm",
    }


def build_encoder(
    cfg: EncoderConfig,
    state: Mapping[str, torch.Tensor],
    options: EncoderOptions,
    device: str | torch.device,
) -> QAEncoder:
    """Arrange a Hugging Face QA state dict into the encoder's fused layout on `device`."""
    import torch

    dev = torch.device(device)
    dtype = options.activation_dtype
    fp8 = options.precision == "fp8"
    prefix = _PREFIX[cfg.kind]

    def get(name: str) -> torch.Tensor:
        for key in (prefix + name, name):
            if key in state:
                return state[key]
        raise ConfigError(
            f"model.safetensors has no tensor '{prefix + name}': is it a "
            f"{cfg.kind} question-answering checkpoint?"
        )

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=dev, dtype=dtype).contiguous()

    def linear(w: torch.Tensor, b: torch.Tensor, quantize: bool) -> _Linear:
        lin = _Linear(put(w), put(b))
        if quantize:
            w32 = w.to(device=dev, dtype=torch.float32)
            scale = w32.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 448.0  # (out, 1)
            q = (w32 / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
            lin.qweight_t = q.t()  # (in, out), column-major: what _scaled_mm wants as mat2
            lin.wscale = scale.t().contiguous()  # (1, out)
        return lin

    emb = "embeddings."
    layers = []
    for i in range(cfg.layers):
        n = _names(cfg, i)
        qkv_w = torch.cat([get(n[x] + ".weight") for x in "qkv"], dim=0)
        qkv_b = torch.cat([get(n[x] + ".bias") for x in "qkv"], dim=0)
        layers.append(
            _Layer(
                qkv=linear(qkv_w, qkv_b, fp8),
                out=linear(get(n["out"] + ".weight"), get(n["out"] + ".bias"), fp8),
                ln1=(put(get(n["ln1"] + ".weight")), put(get(n["ln1"] + ".bias"))),
                ffn1=linear(get(n["ffn1"] + ".weight"), get(n["ffn1"] + ".bias"), fp8),
                ffn2=linear(get(n["ffn2"] + ".weight"), get(n["ffn2"] + ".bias"), fp8),
                ln2=(put(get(n["ln2"] + ".weight")), put(get(n["ln2"] + ".bias"))),
            )
        )
    qa_w = state.get("qa_outputs.weight")
    qa_b = state.get("qa_outputs.bias")
    if qa_w is None or qa_b is None:
        raise ConfigError("model.safetensors has no qa_outputs: is it a QA checkpoint?")
    return QAEncoder(
        config=cfg,
        options=options,
        device=dev,
        word=put(get(emb + "word_embeddings.weight")),
        position=put(get(emb + "position_embeddings.weight")),
        token_type=put(get(emb + "token_type_embeddings.weight")) if cfg.type_vocab else None,
        emb_ln=(put(get(emb + "LayerNorm.weight")), put(get(emb + "LayerNorm.bias"))),
        layers=layers,
        qa=linear(qa_w, qa_b, False),
    )


def load_encoder(
    version_dir: Path, filename: str, options: EncoderOptions, device: str | torch.device
) -> QAEncoder:
    """Read `<version_dir>/config.json` and `<version_dir>/<filename>` (safetensors)."""
    from safetensors.torch import load_file

    cfg_path = version_dir / "config.json"
    weights = version_dir / filename
    for path in (cfg_path, weights):
        if not path.is_file():
            raise ConfigError(
                f"{path} not found: the torch backend reads a Hugging Face config.json and "
                "model.safetensors from the version folder (bertserve build writes both)"
            )
    cfg = EncoderConfig.from_hf(json.loads(cfg_path.read_text()))
    return build_encoder(cfg, load_file(str(weights)), options, device)


def read_config(version_dir: Path) -> EncoderConfig:
    path = version_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: the torch backend needs the checkpoint's config.json")
    return EncoderConfig.from_hf(json.loads(path.read_text()))

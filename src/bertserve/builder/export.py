"""transformers QA model -> ONNX with dynamic batch and sequence axes.

Uses torch's TorchScript-based exporter (`dynamo=False`): with torch 2.13 both exporters give
correct graphs with dynamic axes, but only the TorchScript graph of eager attention is one
ONNX Runtime's transformer optimizer fuses into Attention / EmbedLayerNormalization (the dynamo
graph keeps unfused MatMul/Softmax attention, measured on BERT), and it exports in a fraction
of the time.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["OUTPUT_NAMES", "OPSET", "export_onnx"]

OUTPUT_NAMES: tuple[str, str] = ("start_logits", "end_logits")
OPSET = 17


def export_onnx(
    model: torch.nn.Module, input_names: tuple[str, ...], path: Path, seq_len: int = 16
) -> None:
    """Write `model` (eval mode) to `path`; inputs INT64 [batch, sequence]."""
    import torch

    batch = 2
    example = {
        "input_ids": torch.full((batch, seq_len), 101, dtype=torch.long),
        "attention_mask": torch.ones((batch, seq_len), dtype=torch.long),
        "token_type_ids": torch.zeros((batch, seq_len), dtype=torch.long),
    }
    args = tuple(example[name] for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*input_names, *OUTPUT_NAMES)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-level shape checks inside transformers; the dynamic
        # axes are verified by the parity check at a different batch and sequence length.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )

"""ONNX Runtime graph transforms for CPU variants: operator fusion, fp16, INT8 quantization."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["fuse", "quantize_int8", "to_fp16"]


def fuse(src: Path, dst: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse attention, embedding/skip layer norms and GELU with
    `onnxruntime.transformers.optimizer`; return the non-zero fused-operator counts."""
    from onnxruntime.transformers import optimizer

    with _quiet():
        model = optimizer.optimize_model(
            str(src),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            opt_level=0,
            use_gpu=False,
        )
        model.save_model_to_file(str(dst))
    stats = model.get_fused_operator_statistics()
    return {op: int(n) for op, n in stats.items() if n}


def to_fp16(src: Path, dst: Path) -> None:
    """Convert weights and compute to float16, keeping float32 inputs/outputs."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    with _quiet():
        model = OnnxModel(onnx.load(str(src)))
        model.convert_float_to_float16(keep_io_types=True)
        model.save_model_to_file(str(dst))


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic INT8 quantization: int8 weights, activation scales computed per batch at run
    time (no calibration data). MatMul, fused Attention and embedding Gathers are quantized."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        # Fused com.microsoft operators defeat shape inference; their outputs are float.
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=False,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the optimizer's and quantizer's progress logging and deprecation noise."""
    level = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)

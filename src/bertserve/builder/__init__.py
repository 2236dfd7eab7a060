"""Checkpoints -> Triton-layout model repository: export, optimize, quantize, parity report.

    from bertserve.builder import build_preset
    outcome = build_preset("tiny", Path("models"))        # bert_tiny_onnx_cpu, random weights
    print(outcome.summary())

Layout written per model:

    <repo>/<model>/config.pbtxt                 scheduling only; inputs/outputs auto-completed
    <repo>/<model>/1/model.onnx
    <repo>/<model>/1/tokenizer/                 tokenizer.json, vocab.txt, tokenizer_config.json
    <repo>/<model>/1/build_report.json          parity numbers, fused operators, versions

Heavy libraries (torch, transformers, onnxruntime.transformers) are imported only when a build
runs.
"""

from __future__ import annotations

from bertserve.builder.errors import BuildError, ParityError
from bertserve.builder.model_config import TOKENIZER_DIR
from bertserve.builder.outcome import REPORT_FILE, BuildOutcome, VariantOutcome
from bertserve.builder.presets import PRESETS, Variant, resolve_preset
from bertserve.builder.workflow import BuildOptions, build, build_preset, default_weights

__all__ = [
    "PRESETS",
    "REPORT_FILE",
    "TOKENIZER_DIR",
    "BuildError",
    "BuildOptions",
    "BuildOutcome",
    "ParityError",
    "Variant",
    "VariantOutcome",
    "build",
    "build_preset",
    "default_weights",
    "resolve_preset",
]

"""The accuracy check catches a broken variant, and a broken variant fails the whole build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bertserve.builder import BuildOutcome, ParityError, build_preset
from bertserve.builder.parity import (
    ParityInputs,
    check_parity,
    measure_parity,
    parity_inputs,
    run_onnx,
)

from .conftest import snapshot

NAME = "bert_tiny_onnx_cpu"


def _break(src: Path, dst: Path, scale: float) -> None:
    """Scale the QA head's weights: a subtly wrong model that still runs."""
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and init.name.startswith(
            ("qa_outputs", "onnx::MatMul")
        ):
            array = numpy_helper.to_array(init) * scale
            init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), init.name))
    onnx.save(model, str(dst))


def _reference(tiny_build: BuildOutcome) -> tuple[Path, ParityInputs, dict[str, np.ndarray]]:
    version = tiny_build.repository / NAME / "1"
    inputs = parity_inputs(
        version / "tokenizer", ("input_ids", "attention_mask", "token_type_ids"), 128
    )
    return version, inputs, run_onnx(version / "model.onnx", inputs)


def test_intact_variant_passes(tiny_build: BuildOutcome) -> None:
    version, inputs, reference = _reference(tiny_build)
    parity = measure_parity(
        reference, run_onnx(version / "model.onnx", inputs), inputs, "fp32", check_agreement=True
    )
    assert parity.passed and parity.max_abs_error == 0.0 and parity.agreement == 1.0
    check_parity(NAME, parity)


def test_broken_variant_is_caught(tiny_build: BuildOutcome, tmp_path: Path) -> None:
    version, inputs, reference = _reference(tiny_build)
    broken = tmp_path / "broken.onnx"
    _break(version / "model.onnx", broken, scale=1.1)
    parity = measure_parity(
        reference, run_onnx(broken, inputs), inputs, "fp32", check_agreement=True
    )
    assert not parity.passed
    assert parity.max_relative_error > 1e-3
    with pytest.raises(ParityError, match=f"Variant {NAME} fails its accuracy check"):
        check_parity(NAME, parity)


def test_broken_int8_fails_the_build_and_leaves_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertserve.builder import optimization

    repo = tmp_path / "repo"
    build_preset("tiny", repo)
    before = snapshot(repo)
    real = optimization.quantize_int8

    def broken_quantize(src: Path, dst: Path) -> None:
        real(src, dst)
        _break(dst, dst, scale=-1.0)

    monkeypatch.setattr(optimization, "quantize_int8", broken_quantize)
    with pytest.raises(ParityError, match="bert_tiny_onnx_cpu_int8 fails its accuracy check"):
        build_preset("tiny", repo, precision="int8")
    assert snapshot(repo) == before
    assert sorted(p.name for p in repo.iterdir()) == [NAME, f"{NAME}_qa"]

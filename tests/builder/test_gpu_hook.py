"""GPU variants go through bertserve.builder.gpu_variant.write_gpu_variant when a GPU exists."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bertserve.builder import Variant, build_preset


def test_hook_writes_the_model_and_the_builder_writes_config(
    distilbert_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertserve.builder import workflow as builder

    calls: list[str] = []

    def write_gpu_variant(
        variant: Variant, model: Any, config: Any, version_dir: Path
    ) -> Mapping[str, Any]:
        calls.append(variant.name)
        assert (version_dir / "tokenizer" / "tokenizer.json").is_file()
        config.backend = "bertserve_torch"
        (version_dir / "model.pt").write_bytes(b"weights")
        return {"gpu": "fake"}

    monkeypatch.setattr(builder, "_gpu_writer", lambda: (write_gpu_variant, ""))
    outcome = build_preset(
        "distilbert", tmp_path, weights=distilbert_checkpoint, only=["bert_distill_onnx_gpu"]
    )
    assert calls == ["bert_distill_onnx_gpu"]
    (variant,) = outcome.built
    assert variant.report["gpu"] == "fake"
    config = (tmp_path / "bert_distill_onnx_gpu" / "config.pbtxt").read_text()
    assert 'backend: "bertserve_torch"' in config and "KIND_GPU" in config


def test_nothing_to_build_without_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bertserve.builder import BuildError
    from bertserve.builder import workflow as builder

    monkeypatch.setattr(builder, "_gpu_writer", lambda: (None, "no CUDA GPU on this machine"))
    with pytest.raises(BuildError, match="Nothing to build: bert_base_trt_gpu need a GPU"):
        build_preset("bert-base", tmp_path, weights="random", only=["bert_base_trt_gpu"])
    assert not any(tmp_path.iterdir())

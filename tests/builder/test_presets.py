"""Preset resolution: the reference repository's names and batching, overrides, bad names."""

from __future__ import annotations

import pytest

from bertserve.builder import BuildError, resolve_preset
from bertserve.builder.presets import Overrides


def test_seed_rebuilds_the_reference_models() -> None:
    variants = {v.name: v for v in resolve_preset("seed")}
    assert set(variants) == {
        "bert_base_onnx_cpu",
        "bert_base_onnx_cpu_int8",
        "bert_base_onnx_gpu",
        "bert_base_trt_gpu",
        "bert_base_trt_gpu_seqlen128",
        "bert_distill_onnx_cpu",
        "bert_distill_onnx_cpu_int8",
        "bert_distill_onnx_gpu",
    }
    replaced = {v.replaces: v.name for v in variants.values() if v.replaces}
    assert replaced == {
        "bert_base_tf_cpu": "bert_base_onnx_cpu",
        "bert_base_tf_gpu": "bert_base_onnx_gpu",
        "bert_base_trt_gpu": "bert_base_trt_gpu",
        "bert_base_trt_gpu_seqlen128": "bert_base_trt_gpu_seqlen128",
        "bert_distill_tf_cpu": "bert_distill_onnx_cpu",
        "bert_distill_tf_gpu": "bert_distill_onnx_gpu",
    }
    cpu = variants["bert_base_onnx_cpu"].batching
    assert (cpu.max_batch_size, cpu.preferred_batch_sizes, cpu.max_queue_delay_us) == (
        4,
        (1,),
        2_000_000,
    )
    assert cpu.instances == 2
    s128 = variants["bert_base_trt_gpu_seqlen128"]
    assert (s128.seq_len, s128.batching.max_batch_size, s128.batching.preferred_batch_sizes) == (
        128,
        8,
        (8,),
    )
    assert variants["bert_distill_onnx_gpu"].batching.max_queue_delay_us == 200_000


def test_precision_override_renames_cpu_variants() -> None:
    names = [v.name for v in resolve_preset("bert-base", Overrides(precision="int8"))]
    assert names[0] == "bert_base_onnx_cpu_int8"
    assert "bert_base_onnx_cpu" not in names
    assert [v.name for v in resolve_preset("tiny", Overrides(precision="fp16"))] == [
        "bert_tiny_onnx_cpu_fp16"
    ]


def test_batching_overrides_apply_to_every_variant() -> None:
    variants = resolve_preset("distilbert", Overrides(max_batch_size=2, instances=3, seq_len=128))
    for v in variants:
        assert v.batching.max_batch_size == 2
        assert v.batching.instances == 3
        assert v.seq_len == 128
        assert all(p <= 2 for p in v.batching.preferred_batch_sizes)


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("huge", Overrides(), "Unknown preset 'huge': choose one of"),
        ("tiny", Overrides(only=("nope",)), "--only names nope not in preset 'tiny'"),
        ("tiny", Overrides(seq_len=4096), "--seq-len 4096 is out of range"),
        ("tiny", Overrides(max_batch_size=0), "must be at least 1"),
    ],
)
def test_bad_requests_are_named(preset: str, overrides: Overrides, message: str) -> None:
    with pytest.raises(BuildError, match=message.replace("(", r"\(")):
        resolve_preset(preset, overrides)

"""Candidates as configs: what the search reads from a config and writes into an override."""

from __future__ import annotations

import json

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.plan.knobs import (
    THREADS_PARAMETER,
    Knobs,
    Variant,
    apply,
    config_from_json,
    config_json,
    config_pbtxt,
    knobs_of,
    uses_onnxruntime,
)
from bertserve.plan.variants import family, find_variants, same_inputs

TINY = """
name: "bert_tiny_onnx_cpu"
platform: "onnxruntime_onnx"
max_batch_size: 8
input { name: "input_ids" data_type: TYPE_INT64 dims: -1 }
input { name: "attention_mask" data_type: TYPE_INT64 dims: -1 }
output { name: "start_logits" data_type: TYPE_FP32 dims: -1 }
instance_group { count: 1 kind: KIND_CPU }
dynamic_batching {
  preferred_batch_size: [4, 8]
  max_queue_delay_microseconds: 2000
  default_queue_policy { max_queue_size: 64 }
}
parameters { key: "precision" value { string_value: "fp32" } }
"""


def tiny() -> model_config_pb2.ModelConfig:
    return text_format.Parse(TINY, model_config_pb2.ModelConfig())


def test_knobs_read_from_a_config() -> None:
    config = tiny()
    assert knobs_of(config) == Knobs(8, (4, 8), 2000, 1, 0)
    config.parameters[THREADS_PARAMETER].string_value = "3"
    assert knobs_of(config).threads == 3
    assert uses_onnxruntime(config)


def test_apply_sets_the_knobs_and_keeps_everything_else() -> None:
    variant = Variant("bert_tiny_onnx_cpu_int8", (("precision", "int8"),), "int8")
    config = apply(tiny(), variant, Knobs(16, (), 500, 3, 2))
    assert config.name == "bert_tiny_onnx_cpu_int8"
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == []
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 64  # kept
    assert [g.count for g in config.instance_group] == [3]
    assert config.parameters[THREADS_PARAMETER].string_value == "2"
    assert config.parameters["precision"].string_value == "int8"
    assert [i.name for i in config.input] == ["input_ids", "attention_mask"]
    # Back to no thread count: the parameter goes, so onnxruntime picks its own.
    again = apply(config, variant, Knobs(16, (), 500, 3, 0))
    assert THREADS_PARAMETER not in again.parameters


def test_a_variant_does_not_keep_group_names_derived_from_the_other_model() -> None:
    base = tiny()
    base.instance_group[0].name = "bert_tiny_onnx_cpu_0"
    same = apply(base, Variant(base.name), Knobs(8, (), 0, 1, 0))
    assert [g.name for g in same.instance_group] == ["bert_tiny_onnx_cpu_0"]
    other = apply(base, Variant("bert_tiny_onnx_cpu_int8"), Knobs(8, (), 0, 1, 0))
    assert [g.name for g in other.instance_group] == [""]  # the server names it


def test_batching_is_turned_on_for_a_config_without_it() -> None:
    config = tiny()
    config.ClearField("dynamic_batching")
    out = apply(config, Variant("m"), Knobs(8, (4, 8), 100, 1, 0))
    assert out.HasField("dynamic_batching")
    assert list(out.dynamic_batching.preferred_batch_size) == [4, 8]
    single = apply(config, Variant("m"), Knobs(1, (), 0, 1, 0))
    assert not single.HasField("dynamic_batching")


def test_json_and_pbtxt_round_trips() -> None:
    config = tiny()
    again = config_from_json(json.loads(config_json(config)))
    assert again == config
    # gRPC's as_json reply wraps the config and prints 64-bit integers as strings.
    grpc_form = {"config": {"name": "m", "max_batch_size": 8, "input": [{"dims": ["-1"]}]}}
    parsed = config_from_json(grpc_form)
    assert parsed.max_batch_size == 8 and list(parsed.input[0].dims) == [-1]
    # A field this client's schema lacks does not stop the plan.
    assert config_from_json({"name": "m", "some_future_field": 1}).name == "m"
    assert text_format.Parse(config_pbtxt(config), model_config_pb2.ModelConfig()) == config


def test_variants_are_siblings_by_precision_suffix_and_gpu_precisions() -> None:
    config = tiny()
    names = ["bert_tiny_onnx_cpu", "bert_tiny_onnx_cpu_int8", "bert_base_onnx_cpu_int8"]
    seed, others = find_variants("bert_tiny_onnx_cpu", config, names)
    assert seed == Variant("bert_tiny_onnx_cpu", (), "fp32")
    assert others == [Variant("bert_tiny_onnx_cpu_int8", (), "int8")]
    assert family("bert_base_trt_gpu_fp8") == "bert_base_trt_gpu"

    gpu = tiny()
    gpu.ClearField("platform")
    gpu.backend = "bertserve_torch"
    gpu.instance_group[0].kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    gpu.parameters["precision"].string_value = "fp16"
    _, others = find_variants("bert_base_trt_gpu", gpu, ["bert_base_trt_gpu"])
    assert others == [Variant("bert_base_trt_gpu", (("precision", "fp8"),), "fp8")]


def test_same_inputs_compares_names_and_datatypes() -> None:
    a, b = tiny(), tiny()
    assert same_inputs(a, b)
    b.input[0].data_type = model_config_pb2.TYPE_INT32
    assert not same_inputs(a, b)

"""Instance placement: instance_group kind, count and gpus, as tritonserver places them."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.backends.base import Device
from bertserve.engine.loader import devices
from bertserve.errors import ConfigError
from bertserve.metrics import visible_gpu_filter
from bertserve.repository.normalize import place_instance_groups
from bertserve.repository.validation import validate_instance_groups


def _config(text: str, backend: str = "bertserve_torch") -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig(name="m", backend=backend))


def _place(config: model_config_pb2.ModelConfig, gpus: list[int], capable: bool = True) -> None:
    place_instance_groups(config, gpus, capable)
    validate_instance_groups(config, gpus)


def test_gpu_group_without_gpus_puts_count_instances_on_every_visible_gpu():
    config = _config("instance_group { kind: KIND_GPU count: 2 }")
    _place(config, [0, 1])
    assert list(config.instance_group[0].gpus) == [0, 1]
    assert devices(config) == [Device("gpu", 0)] * 2 + [Device("gpu", 1)] * 2


def test_listed_gpus_and_mixed_groups():
    config = _config(
        "instance_group { kind: KIND_GPU count: 1 gpus: [1] }\n"
        "instance_group { kind: KIND_CPU count: 2 }"
    )
    _place(config, [0, 1])
    assert devices(config) == [Device("gpu", 1), Device("cpu"), Device("cpu")]
    assert [g.name for g in config.instance_group] == ["m_0", "m_1"]


@pytest.mark.parametrize(
    ("backend", "gpus", "capable", "kind", "count"),
    [
        ("bertserve_torch", [0], True, "KIND_GPU", 1),
        ("bertserve_torch", [], True, "KIND_CPU", 1),
        # onnxruntime without CUDA stays on the CPU, with Triton's two CPU instances
        ("onnxruntime", [0], False, "KIND_CPU", 2),
        ("onnxruntime", [], True, "KIND_CPU", 2),
        ("onnxruntime", [0], True, "KIND_GPU", 1),
    ],
)
def test_default_group_is_named_like_the_model_with_triton_s_count(
    backend, gpus, capable, kind, count
):
    config = _config("", backend)
    _place(config, gpus, capable)
    group = config.instance_group[0]
    assert group.name == "m"
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == kind
    assert group.count == count


def test_gpu_not_visible_is_a_clear_error():
    with pytest.raises(ConfigError, match="specifies invalid or unsupported gpu id 3"):
        _place(_config("instance_group { kind: KIND_GPU gpus: [3] }"), [0, 1])
    with pytest.raises(ConfigError, match="has kind KIND_GPU but no GPUs are available"):
        _place(_config("instance_group { kind: KIND_GPU }"), [])
    with pytest.raises(ConfigError, match="has kind KIND_CPU but specifies one or more GPUs"):
        _place(_config("instance_group { kind: KIND_CPU gpus: [0] }"), [0])


def test_cuda_visible_devices_filter():
    assert visible_gpu_filter({}) is None
    assert visible_gpu_filter({"CUDA_VISIBLE_DEVICES": "1, GPU-ab"}) == ["1", "GPU-ab"]
    assert visible_gpu_filter({"CUDA_VISIBLE_DEVICES": ""}) == []

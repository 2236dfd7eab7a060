"""Instance placement: instance_group kind, count and gpus, as Triton places them."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.backends.base import Device
from bertserve.engine.loader import complete_instance_groups, devices
from bertserve.errors import ConfigError
from bertserve.metrics import visible_gpu_filter


def _config(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig(name="m"))


def test_gpu_group_without_gpus_puts_count_instances_on_every_visible_gpu():
    config = _config("instance_group { kind: KIND_GPU count: 2 }")
    complete_instance_groups(config, "bertserve_torch", [0, 1])
    assert list(config.instance_group[0].gpus) == [0, 1]
    assert devices(config) == [Device("gpu", 0)] * 2 + [Device("gpu", 1)] * 2


def test_listed_gpus_and_mixed_groups():
    config = _config(
        "instance_group { kind: KIND_GPU count: 1 gpus: [1] }\n"
        "instance_group { kind: KIND_CPU count: 2 }"
    )
    complete_instance_groups(config, "bertserve_torch", [0, 1])
    assert devices(config) == [Device("gpu", 1), Device("cpu"), Device("cpu")]
    assert [g.name for g in config.instance_group] == ["m_0", "m_1"]


def test_auto_picks_gpu_for_gpu_backends_and_cpu_otherwise():
    for backend, gpus, kind in [
        ("bertserve_torch", [0], "KIND_GPU"),
        ("bertserve_torch", [], "KIND_CPU"),
        ("onnxruntime", [0], "KIND_CPU"),
    ]:
        config = _config("")
        complete_instance_groups(config, backend, gpus)
        group = config.instance_group[0]
        assert model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == kind
        assert group.count == 1


def test_gpu_not_visible_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"gpus lists \[3\]"):
        complete_instance_groups(
            _config("instance_group { kind: KIND_GPU gpus: [3] }"), "bertserve_torch", [0, 1]
        )
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        complete_instance_groups(
            _config("instance_group { kind: KIND_GPU }"), "bertserve_torch", []
        )


def test_cuda_visible_devices_filter():
    assert visible_gpu_filter({}) is None
    assert visible_gpu_filter({"CUDA_VISIBLE_DEVICES": "1, GPU-ab"}) == ["1", "GPU-ab"]
    assert visible_gpu_filter({"CUDA_VISIBLE_DEVICES": ""}) == []

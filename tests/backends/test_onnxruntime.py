"""The onnxruntime backend reads its parameters and model file through the shared reader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2

from bertserve.backends.base import Device, LoadContext
from bertserve.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeInstance
from bertserve.errors import ConfigError


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    """<repo>/ident/1/model.onnx: y = x, FP32 [-1, 4]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "ident",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version = tmp_path / "repo" / "ident" / "1"
    version.mkdir(parents=True)
    onnx.save(model, str(version / "model.onnx"))
    return version


def _config(**parameters: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig(name="ident", max_batch_size=0)
    config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU, count=2)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return config


def _load(version_dir: Path, **parameters: str) -> OnnxRuntimeInstance:
    instance = OnnxRuntimeBackend().load(
        _config(**parameters), version_dir, Device(), LoadContext("ident", 1)
    )
    assert isinstance(instance, OnnxRuntimeInstance)
    return instance


def test_parameters_reach_the_session(version_dir: Path) -> None:
    instance = _load(
        version_dir,
        intra_op_thread_count="3",
        inter_op_thread_count="2",
        allow_spinning="yes",  # the on/off words flags take, not just ORT's "1"
    )
    options = instance.session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "1"
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(instance.run({"x": x}, ["y"])["y"], x)


def test_defaults_share_the_cores_and_do_not_spin(version_dir: Path) -> None:
    options = _load(version_dir).session.get_session_options()
    assert options.intra_op_num_threads >= 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


_MOST = 4 * (os.cpu_count() or 1)  # threads a core: more only contend


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("intra_op_thread_count", "four", "intra_op_thread_count must be an integer"),
        ("inter_op_thread_count", "-1", f"inter_op_thread_count must be from 0 to {_MOST}, got"),
        ("intra_op_thread_count", "200", f"intra_op_thread_count must be from 0 to {_MOST}, got"),
        ("allow_spinning", "sometimes", "allow_spinning must be true or false"),
    ],
)
def test_bad_parameters_name_the_model_and_key(
    version_dir: Path, key: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^model 'ident': parameters.{message}"):
        _load(version_dir, **{key: value})


def test_default_model_filename_stays_inside_the_model_folder(
    version_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes((version_dir / "model.onnx").read_bytes())
    (version_dir.parent / "shared.onnx").write_bytes(outside.read_bytes())
    backend = OnnxRuntimeBackend()
    config = _config()
    config.default_model_filename = "../shared.onnx"
    backend.autocomplete(config, version_dir)  # inside the model's folder: fine
    assert [t.name for t in config.input] == ["x"]
    for name in ("../../../elsewhere.onnx", str(outside)):
        config = _config()
        config.default_model_filename = name
        with pytest.raises(ConfigError, match="default_model_filename .* leads outside") as info:
            backend.autocomplete(config, version_dir)
        assert str(tmp_path) not in str(info.value).replace(name, "")
        with pytest.raises(ConfigError, match="leads outside"):
            backend.load(config, version_dir, Device(), LoadContext("ident", 1))

"""Configs completed as tritonserver completes them, compared field by field with the configs
Triton's own tests expect (its L0_model_config autofill cases, on a machine without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.engine.loader import CompletionSettings, prepare_config
from bertserve.errors import ConfigError
from bertserve.repository import read_model_source
from tests.triton_models import add_sub

_IO = """
input { name: "INPUT0" data_type: TYPE_INT32 dims: 16 }
input { name: "INPUT1" data_type: TYPE_INT32 dims: 16 }
output { name: "OUTPUT0" data_type: TYPE_INT8 dims: 16 }
output { name: "OUTPUT1" data_type: TYPE_INT8 dims: 16 }
"""
_TAIL = """
default_model_filename: "model.onnx"
optimization { input_pinned_memory { enable: true } output_pinned_memory { enable: true } }
backend: "onnxruntime"
"""


def _expected(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _complete(
    repo: Path, name: str, config: str | None, batch: int = 8, **completion: object
) -> model_config_pb2.ModelConfig:
    folder = add_sub(repo, name, "INT32", ("INT8", "INT8"), [16], max_batch_size=batch,
                     config=False)  # fmt: skip
    if config is not None:
        (folder / "config.pbtxt").write_text(config)
    settings = CompletionSettings(**completion)  # type: ignore[arg-type]
    completed, _, _ = prepare_config(read_model_source(name, folder), None, settings, gpus=[])
    return completed


@pytest.mark.parametrize("config", [None, ""], ids=["no_config", "empty_config"])
def test_batching_model_without_config(tmp_path: Path, config: str | None) -> None:
    name = "no_config" if config is None else "empty_config"
    expected = _expected(
        f'name: "{name}" platform: "onnxruntime_onnx" version_policy {{ latest {{ '
        "num_versions: 1 } } max_batch_size: 4"
        + _IO
        + f'instance_group {{ name: "{name}" count: 2 kind: KIND_CPU }}\n'
        "dynamic_batching { preferred_batch_size: 4 }\n" + _TAIL
    )
    assert _complete(tmp_path, name, config) == expected


def test_model_without_batch_axis(tmp_path: Path) -> None:
    completed = _complete(
        tmp_path, "no_config_no_batch", "instance_group [ { kind: KIND_CPU } ]", batch=0
    )
    assert completed == _expected(
        'name: "no_config_no_batch" platform: "onnxruntime_onnx" version_policy { latest { '
        "num_versions: 1 } }"
        + _IO
        + 'instance_group { name: "no_config_no_batch_0" count: 2 kind: KIND_CPU }\n'
        + _TAIL
    )


def test_listed_tensors_are_left_as_written(tmp_path: Path) -> None:
    """Inputs and outputs given: no auto-complete at all (max_batch_size stays), as Triton."""
    written = 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n' + _IO
    completed = _complete(tmp_path, "cpu_instance", written + "instance_group { kind: KIND_CPU }")
    assert completed.max_batch_size == 8 and not completed.HasField("dynamic_batching")
    assert [list(t.dims) for t in completed.input] == [[16], [16]]
    assert completed.instance_group[0].count == 2


def test_default_max_batch_size_from_the_backend_config(tmp_path: Path) -> None:
    options = {"backend_config": {"onnxruntime": {"default-max-batch-size": "16"}}}
    completed = _complete(tmp_path, "m", None, **options)
    assert completed.max_batch_size == 16
    assert list(completed.dynamic_batching.preferred_batch_size) == [16]
    # A global setting applies to every backend; a backend's own wins.
    options = {"backend_config": {"": {"default-max-batch-size": "2"}}}
    assert _complete(tmp_path / "g", "m", None, **options).max_batch_size == 2
    # 1 batches without a dynamic batcher, 0 keeps the batch axis in dims.
    options = {"backend_config": {"": {"default-max-batch-size": "1"}}}
    one = _complete(tmp_path / "one", "m", None, **options)
    assert one.max_batch_size == 1 and not one.HasField("dynamic_batching")
    options = {"backend_config": {"onnxruntime": {"default-max-batch-size": "0"}}}
    zero = _complete(tmp_path / "zero", "m", None, **options)
    assert zero.max_batch_size == 0 and list(zero.input[0].dims) == [-1, 16]


def test_given_max_batch_size_is_kept_and_gets_a_dynamic_batcher(tmp_path: Path) -> None:
    completed = _complete(tmp_path, "m", "max_batch_size: 8\n")
    assert completed.max_batch_size == 8
    assert list(completed.dynamic_batching.preferred_batch_size) == [8]
    assert [list(t.dims) for t in completed.input] == [[16], [16]]


def test_non_batching_model_with_max_batch_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match="autofill failed for model 'm': model does not support batching while non-zero "
        "max_batch_size is specified",
    ):
        _complete(tmp_path, "m", "max_batch_size: 1\n", batch=0)


def test_disabled_auto_complete_still_fills_backend_fields_and_defaults(tmp_path: Path) -> None:
    completed = _complete(tmp_path, "m", "max_batch_size: 8\n" + _IO, auto_complete=False)
    assert (completed.backend, completed.platform) == ("onnxruntime", "onnxruntime_onnx")
    assert completed.default_model_filename == "model.onnx"
    assert completed.version_policy.latest.num_versions == 1
    assert not completed.HasField("dynamic_batching")


def test_instance_groups_get_tritons_names_and_counts(tmp_path: Path) -> None:
    completed = _complete(
        tmp_path,
        "m",
        'instance_group { kind: KIND_CPU count: 3 }\ninstance_group { name: "x" }\n',
    )
    groups = [(g.name, g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind))
              for g in completed.instance_group]  # fmt: skip
    assert groups == [("m_0", 3, "KIND_CPU"), ("x", 2, "KIND_CPU")]

"""model_warmup: samples run on every instance before it serves; data files stay in the model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.backends.base import ModelInstance
from bertserve.engine.loader import warm_up
from bertserve.errors import ConfigError


class Recorder(ModelInstance):
    """An instance that keeps what it was asked to run."""

    def __init__(self) -> None:
        self.runs: list[dict[str, np.ndarray]] = []

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        self.runs.append(dict(inputs))
        return {}


def _config(data_file: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(
        'name: "m" max_batch_size: 2\n'
        'output { name: "y" data_type: TYPE_FP32 dims: [4] }\n'
        'model_warmup { name: "w" batch_size: 2 count: 3 inputs { key: "x" value { '
        f'data_type: TYPE_FP32 dims: [4] input_data_file: "{data_file}" }} }} }}\n',
        model_config_pb2.ModelConfig(),
    )


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "repo" / "m"
    (folder / "warmup").mkdir(parents=True)
    np.arange(8, dtype=np.float32).tofile(folder / "warmup" / "x.bin")
    np.arange(8, dtype=np.float32).tofile(tmp_path / "outside.bin")
    return folder


def test_input_data_file_feeds_every_instance(model_dir: Path) -> None:
    instances = [Recorder(), Recorder()]
    warm_up(_config("x.bin"), list(instances), model_dir)
    for instance in instances:
        assert len(instance.runs) == 3
        np.testing.assert_array_equal(
            instance.runs[0]["x"], np.arange(8, dtype=np.float32).reshape(2, 4)
        )


def test_input_data_file_of_the_wrong_size_names_the_file_as_given(model_dir: Path) -> None:
    np.zeros(3, dtype=np.float32).tofile(model_dir / "warmup" / "short.bin")
    with pytest.raises(ConfigError) as info:
        warm_up(_config("short.bin"), [Recorder()], model_dir)
    assert str(info.value) == (
        "model_warmup 'w': input_data_file 'short.bin' holds 3 elements, the shape [2, 4] needs 8"
    )


@pytest.mark.parametrize("name", ["../../outside.bin", "../../absent.bin", "/etc/hostname"])
def test_input_data_file_outside_the_model_folder_is_refused(model_dir: Path, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        warm_up(_config(name), [Recorder()], model_dir)
    assert str(info.value) == (
        f"model 'm': model_warmup 'w' input_data_file '{name}' leads outside the model's "
        "folder: name a file inside it (paths are relative to its folder 'warmup')"
    )

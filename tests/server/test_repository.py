"""config.pbtxt parsing, auto-completion from the ONNX graph, version policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bertserve.engine.loader import CompletionSettings, prepare_config
from bertserve.errors import ConfigError
from bertserve.repository import (
    config_to_json,
    find_models,
    parse_config_text,
    read_model_source,
    select_versions,
)
from tests.conftest import TINY


def _model(tmp_path: Path, tiny_repo: Path, config: str, versions: tuple[int, ...] = (1,)) -> Path:
    folder = tmp_path / "m"
    for v in versions:
        shutil.copytree(tiny_repo / TINY / "1", folder / str(v))
    (folder / "config.pbtxt").write_text(config)
    return folder


def test_reference_style_config_is_completed_from_the_graph(tmp_path: Path, tiny_repo: Path):
    folder = _model(tmp_path, tiny_repo, 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n')
    config, backend, versions = prepare_config(read_model_source("m", folder), None)
    assert backend.name == "onnxruntime" and versions == [1]
    assert config.name == "m"
    assert [i.name for i in config.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [list(i.dims) for i in config.input] == [[-1], [-1], [-1]]
    assert [o.name for o in config.output] == ["start_logits", "end_logits"]
    as_json = config_to_json(config)
    assert as_json["max_batch_size"] == 4
    assert as_json["input"][0]["dims"] == [-1]  # numbers, not protobuf's strings
    assert as_json["input"][0]["data_type"] == "TYPE_INT64"
    assert as_json["instance_group"][0]["kind"] == "KIND_CPU"


def test_config_json_keeps_maps_and_nested_numbers(tmp_path: Path, tiny_repo: Path):
    folder = _model(
        tmp_path,
        tiny_repo,
        'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
        'parameters { key: "weights" value { string_value: "random" } }\n'
        "dynamic_batching { max_queue_delay_microseconds: 200000 "
        "default_queue_policy { max_queue_size: 3 default_timeout_microseconds: 9 } }\n"
        'model_warmup { name: "w" batch_size: 1 inputs { key: "input_ids" value { '
        "data_type: TYPE_INT64 dims: [8] zero_data: true } } }\n",
    )
    config, _, _ = prepare_config(read_model_source("m", folder), None)
    as_json = config_to_json(config)
    assert as_json["parameters"] == {"weights": {"string_value": "random"}}
    policy = as_json["dynamic_batching"]["default_queue_policy"]
    assert policy["max_queue_size"] == 3 and policy["default_timeout_microseconds"] == 9
    assert as_json["dynamic_batching"]["max_queue_delay_microseconds"] == 200000
    assert as_json["model_warmup"][0]["inputs"]["input_ids"]["dims"] == [8]


def test_missing_config_file_is_guessed_from_model_file(tmp_path: Path, tiny_repo: Path):
    folder = _model(tmp_path, tiny_repo, "")
    (folder / "config.pbtxt").unlink()
    config, _, _ = prepare_config(read_model_source("m", folder), None)
    assert config.platform == "onnxruntime_onnx" and len(config.input) == 3


def _inputs(data_type: str, dims: str) -> str:
    return (
        f'input {{ name: "input_ids" data_type: {data_type} dims: {dims} }}\n'
        'input { name: "attention_mask" data_type: TYPE_INT64 dims: [-1] }\n'
        'input { name: "token_type_ids" data_type: TYPE_INT64 dims: [-1] }\n'
    )


_OUTPUTS = (
    'output { name: "start_logits" data_type: TYPE_FP32 dims: [-1] }\n'
    'output { name: "end_logits" data_type: TYPE_FP32 dims: [-1] }\n'
)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'input { name: "nope" data_type: TYPE_INT64 dims: [-1] }',
            "unable to load model 'm', configuration expects 1 inputs, model provides 3",
        ),
        (
            'input { name: "nope" data_type: TYPE_INT64 dims: [-1] }\n'
            'input { name: "attention_mask" data_type: TYPE_INT64 dims: [-1] }\n'
            'input { name: "token_type_ids" data_type: TYPE_INT64 dims: [-1] }',
            "unexpected inference input 'nope', allowed inputs are: attention_mask, input_ids, "
            "token_type_ids",
        ),
        (
            _inputs("TYPE_FP32", "[-1]"),
            "unable to load model 'm', configuration expects datatype TYPE_FP32 for input "
            "'input_ids', model provides TYPE_INT64",
        ),
        (
            _inputs("TYPE_INT64", "[-1, 3]"),
            "model 'm', tensor 'input_ids': the model expects 2 dimensions (shape [-1,-1]) but "
            "the model configuration specifies 3 dimensions (an initial batch dimension because "
            "max_batch_size > 0 followed by the explicit tensor shape, making complete shape "
            "[-1,-1,3])",
        ),
        (
            _inputs("TYPE_INT64", "[-1]") + _OUTPUTS.replace("start_logits", "nope"),
            "unexpected inference output 'nope', allowed outputs are: end_logits, start_logits",
        ),
        (
            _inputs("TYPE_INT64", "[-1]") + _OUTPUTS.replace("dims: [-1] }", "dims: [8] }"),
            "model 'm', tensor 'start_logits': the model expects 2 dimensions (shape [-1,-1]) "
            "but the model configuration specifies 2 dimensions",
        ),
        (
            "dynamic_batching { preferred_batch_size: 64 }",
            "dynamic batching preferred size must be <= max batch size for m",
        ),
        (
            "instance_group { kind: KIND_GPU }",
            "instance group m_0 of model m has kind KIND_GPU but no GPUs are available",
        ),
    ],
)
def test_contradicting_config_names_the_field_in_tritons_words(
    tmp_path: Path, tiny_repo: Path, extra: str, message: str
) -> None:
    folder = _model(
        tmp_path, tiny_repo, f'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n{extra}\n'
    )
    with pytest.raises(ConfigError) as info:
        prepare_config(read_model_source("m", folder), None, gpus=[])
    assert message in str(info.value)


def test_text_format_errors_carry_the_position():
    with pytest.raises(ConfigError, match=r"config.pbtxt: 2:1 .*not_a_field"):
        parse_config_text("max_batch_size: 4\nnot_a_field: 1\n")


def test_name_must_match_folder(tmp_path, tiny_repo):
    folder = _model(tmp_path, tiny_repo, 'name: "other"\n')
    with pytest.raises(
        ConfigError,
        match="unexpected directory name 'm' for model 'other', directory name must equal model",
    ):
        read_model_source("m", folder)


def test_without_auto_complete_an_incomplete_config_is_refused(tmp_path, tiny_repo):
    folder = _model(tmp_path, tiny_repo, 'platform: "onnxruntime_onnx"\n')
    off = CompletionSettings(auto_complete=False)
    with pytest.raises(ConfigError, match="configuration expects 0 inputs, model provides 3"):
        prepare_config(read_model_source("m", folder), None, off)
    (folder / "config.pbtxt").unlink()
    with pytest.raises(ConfigError, match="has no config.pbtxt"):
        prepare_config(read_model_source("m", folder), None, off)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [3]),
        ("version_policy { all {} }", [1, 2, 3]),
        ("version_policy { latest { num_versions: 2 } }", [2, 3]),
        ("version_policy { specific { versions: [1, 3] } }", [1, 3]),
    ],
)
def test_version_policy(tmp_path, tiny_repo, policy, expected):
    folder = _model(tmp_path, tiny_repo, policy, versions=(1, 2, 3))
    source = read_model_source("m", folder)
    assert select_versions(source.config, folder) == expected


def test_specific_version_that_does_not_exist(tmp_path, tiny_repo):
    folder = _model(tmp_path, tiny_repo, "version_policy { specific { versions: [7] } }")
    with pytest.raises(
        ConfigError, match=r"no version is available \(version_policy asks for \[7\]"
    ):
        select_versions(read_model_source("m", folder).config, folder)
    # As in Triton, the versions that exist still load.
    folder = _model(tmp_path / "b", tiny_repo, "version_policy { specific { versions: [1, 7] } }")
    assert select_versions(read_model_source("m", folder).config, folder) == [1]


def test_same_model_in_two_repositories_is_refused(tmp_path, tiny_repo):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "x").mkdir(parents=True)
    (b / "x").mkdir(parents=True)
    with pytest.raises(ConfigError, match="two repositories"):
        find_models([a, b])

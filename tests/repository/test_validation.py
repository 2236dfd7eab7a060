"""Invalid configs are refused before any version folder is read, each in tritonserver's words
naming the field (the cases of Triton's L0_model_config), with and without auto-complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertserve.engine.loader import CompletionSettings, prepare_config
from bertserve.errors import BertserveError
from bertserve.repository import read_model_source
from tests.triton_models import add_sub

_IO = """
input { name: "input" data_type: TYPE_FP32 dims: [16] }
output { name: "output" data_type: TYPE_FP32 dims: [16] }
"""
_SEQ = "sequence_batching {{ control_input [ {} ] }}\n"
_BOOL_CONTROL = '{{ name: "{}" control [ {{ kind: {} int32_false_true: [0, 1] }} ] }}'


def _io(section: str, dims: str, reshape: str) -> str:
    other = "output" if section == "input" else "input"
    return (
        f'{section} {{ name: "{section}" data_type: TYPE_FP32 dims: {dims} '
        f"reshape {{ shape: {reshape} }} }}\n"
        f'{other} {{ name: "{other}" data_type: TYPE_FP32 dims: [16] }}\n'
    )


# (case, config after `platform: "onnxruntime_onnx"`, tritonserver's message)
CASES = [
    ("negative max_batch_size", "max_batch_size: -1\n" + _IO,
     "'max_batch_size' must be non-negative value for m"),
    ("zero dims input", "max_batch_size: 1\n" + _IO.replace("[16] }\noutput", "[0] }\noutput"),
     "model input 'input' dimension must be integer >= 1, or -1 to indicate a variable-size "
     "dimension for m"),
    ("zero dims output", "max_batch_size: 1\n"
     + _IO.replace('"output" data_type: TYPE_FP32 dims: [16]', '"output" data_type: TYPE_FP32 '
                   "dims: [-2]"),
     "model output 'output' dimension must be integer >= 1, or -1"),
    ("missing data_type", 'max_batch_size: 1\ninput { name: "input" dims: [16] }\n'
     'output { name: "output" data_type: TYPE_FP32 dims: [16] }\n',
     "model input 'input' must specify 'data_type' for m"),
    ("reshape element count", "max_batch_size: 1\n" + _io("input", "[2, 8]", "[4, 3]"),
     "model input 'input' has different size for dims and reshape for m"),
    ("reshape output count", "max_batch_size: 1\n" + _io("output", "[16]", "[2, 4]"),
     "model output 'output' has different size for dims and reshape for m"),
    ("reshape variable count", "max_batch_size: 1\n" + _io("input", "[-1, 4]", "[-1, 2, -1]"),
     "model input 'input' has different number of variable-size dimensions for dims and "
     "reshape for m"),
    ("reshape variable size", "max_batch_size: 1\n" + _io("input", "[2, -1, 4]", "[4, -1, 2]"),
     "model input 'input' has different size for dims and reshape for m"),
    ("reshape zero", "max_batch_size: 1\n" + _io("output", "[16]", "[16, 0]"),
     "model output 'output' reshape dimensions must be integer >= 1, or -1 to indicate a "
     "variable-size dimension for m"),
    ("empty reshape without batching", "max_batch_size: 0\n" + _io("input", "[1]", "[]"),
     "model input 'input' cannot have empty reshape for non-batching model as scalar tensors "
     "are not supported for m"),
    ("preferred above max", "max_batch_size: 4\ndynamic_batching { preferred_batch_size: 8 }\n"
     + _IO, "dynamic batching preferred size must be <= max batch size for m"),
    ("preferred zero", "max_batch_size: 4\ndynamic_batching { preferred_batch_size: 0 }\n" + _IO,
     "dynamic batching preferred size must be positive for m"),
    ("default priority level", "max_batch_size: 4\ndynamic_batching { priority_levels: 3 "
     "default_priority_level: 4 }\n" + _IO,
     "default priority level must be in range [1, 3] for m"),
    ("priority queue level", "max_batch_size: 4\ndynamic_batching { priority_levels: 3 "
     "default_priority_level: 1 priority_queue_policy { key: 0 value: {} } }\n" + _IO,
     "priority queue policy must have priority level in range [1, 3] for m"),
    ("preserve ordering with priorities", "max_batch_size: 4\ndynamic_batching { "
     "priority_levels: 2 default_priority_level: 1 preserve_ordering: true }\n" + _IO,
     "Only one priority level is allowed when 'preserve_ordering' is true for m"),
    ("preserve ordering with delay", "max_batch_size: 4\ndynamic_batching { preserve_ordering: "
     "true default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5 } }\n"
     + _IO, "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is "
     "true for m"),
    ("control kind twice", "max_batch_size: 8\n" + _SEQ.format(
        _BOOL_CONTROL.format("START", "CONTROL_SEQUENCE_START") + ", "
        + _BOOL_CONTROL.format("READY", "CONTROL_SEQUENCE_START")) + _IO,
     "sequence batching specifies multiple CONTROL_SEQUENCE_START tensors for m"),
    ("control tensor twice", "max_batch_size: 8\n" + _SEQ.format(
        _BOOL_CONTROL.format("START", "CONTROL_SEQUENCE_START") + ", "
        + _BOOL_CONTROL.format("START", "CONTROL_SEQUENCE_READY")) + _IO,
     "sequence batching control tensor 'START' is specified for multiple control kinds for m"),
    ("control without values", "max_batch_size: 8\n" + _SEQ.format(
        '{ name: "READY" control [ { kind: CONTROL_SEQUENCE_READY } ] }') + _IO,
     "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or "
     "'bool_false_true' for CONTROL_SEQUENCE_READY for m"),
    ("batch input sources", "max_batch_size: 8\n" + _IO + "batch_input [ { kind: "
     'BATCH_ELEMENT_COUNT target_name: "B" data_type: TYPE_FP32 } ]\n',
     "batch input kind 'BATCH_ELEMENT_COUNT' expects 1 source input, got 0"),
    ("batch input unknown source", "max_batch_size: 8\n" + _IO + "batch_input [ { kind: "
     'BATCH_ELEMENT_COUNT target_name: "B" data_type: TYPE_FP32 source_input: "NO" } ]\n',
     "unknown source input name 'NO'"),
    ("batch output twice", "max_batch_size: 8\n" + _IO + 'batch_output [ { target_name: '
     '["output", "output"] kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "input" } ]\n',
     "target output name 'output' can only be specified once"),
    ("batch output unknown target", "max_batch_size: 8\n" + _IO + 'batch_output [ { '
     'target_name: "NO" kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "input" } ]\n',
     "unknown target output name 'NO'"),
    ("ensemble scheduling", "max_batch_size: 8\n" + _IO + "ensemble_scheduling { step [ { "
     'model_name: "x" model_version: -1 } ] }\n',
     "ensemble scheduling cannot be set for model 'm' whose platform is not ensemble"),
    ("cpu group with gpus", "max_batch_size: 8\n" + _IO
     + "instance_group [ { kind: KIND_CPU gpus: [0] } ]\n",
     "instance group m_0 of model m has kind KIND_CPU but specifies one or more GPUs"),
    ("unknown gpu", "max_batch_size: 8\n" + _IO
     + "instance_group [ { kind: KIND_GPU gpus: [42] } ]\n",
     "instance group m_0 of model m specifies invalid or unsupported gpu id 42. GPUs with at "
     "least the minimum required CUDA compute compatibility"),
]  # fmt: skip


@pytest.mark.parametrize("auto_complete", [False, True], ids=["strict", "autofill"])
@pytest.mark.parametrize(("case", "config", "message"), CASES, ids=[c[0] for c in CASES])
def test_refused_before_any_version_folder_is_read(
    tmp_path: Path, case: str, config: str, message: str, auto_complete: bool
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()  # no version folder at all
    (folder / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n' + config)
    completion = CompletionSettings(auto_complete=auto_complete)
    with pytest.raises(BertserveError) as info:
        prepare_config(read_model_source("m", folder), None, completion, gpus=[])
    assert message in str(info.value)


def test_a_valid_config_without_a_version_folder_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 1\n' + _IO)
    with pytest.raises(BertserveError, match="failed to load 'm', no version is available"):
        prepare_config(read_model_source("m", folder), None, gpus=[])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("max_batch_size: 1\n",
         "Invalid model name: Could not determine backend for model 'm' with no backend in model "
         "configuration. Expected model name of the form 'model.<backend_name>'."),
        ('platform: "onnxruntim"\ndefault_model_filename: "model.onnx"\n',
         "unexpected 'platform' and 'backend' pair, got:onnxruntim, onnxruntime"),
        ('platform: "tensorrt_plan"\n', "unexpected platform type 'tensorrt_plan' for m"),
        ('backend: "python"\n', "unable to find backend library for backend 'python'"),
    ],
)  # fmt: skip
def test_backend_and_platform(tmp_path: Path, config: str, message: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.pbtxt").write_text(config)
    with pytest.raises(BertserveError) as info:
        prepare_config(read_model_source("m", folder), None, gpus=[])
    assert message in str(info.value)


# Against the model file (Triton's autofill_noplatform/onnx cases, on its add/sub model).
_MODEL_IO = """
input { name: "INPUT0" data_type: TYPE_INT32 dims: [16] }
input { name: "INPUT1" data_type: TYPE_INT32 dims: [16] }
output { name: "OUTPUT0" data_type: TYPE_INT8 dims: [16] }
output { name: "OUTPUT1" data_type: TYPE_INT8 dims: [16] }
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.replace('dims: [16] }\ninput', 'dims: [16, 1] }\ninput', 1),
         "model 'm', tensor 'INPUT0': the model expects 2 dimensions (shape [-1,16]) but the "
         "model configuration specifies 3 dimensions (an initial batch dimension because "
         "max_batch_size > 0 followed by the explicit tensor shape, making complete shape "
         "[-1,16,1])"),
        (lambda c: c.replace('"OUTPUT1" data_type: TYPE_INT8 dims: [16]',
                             '"OUTPUT1" data_type: TYPE_INT8 dims: [1]'),
         "model 'm', tensor 'OUTPUT1': the model expects 2 dimensions (shape [-1,16]) but the "
         "model configuration specifies 2 dimensions (an initial batch dimension because "
         "max_batch_size > 0 followed by the explicit tensor shape, making complete shape "
         "[-1,1])"),
        (lambda c: c.split("\n", 2)[2],
         "unable to load model 'm', configuration expects 1 inputs, model provides 2"),
        (lambda c: c + 'input { name: "INPUT_EXTRA" data_type: TYPE_INT32 dims: [16] }\n',
         "unable to load model 'm', configuration expects 3 inputs, model provides 2"),
        (lambda c: c.replace('"INPUT1"', '"INPUT_UNKNOWN"'),
         "unexpected inference input 'INPUT_UNKNOWN', allowed inputs are: INPUT0, INPUT1"),
        (lambda c: c.replace('"OUTPUT1"', '"OUTPUT_UNKNOWN"'),
         "unexpected inference output 'OUTPUT_UNKNOWN', allowed outputs are: OUTPUT0, OUTPUT1"),
    ],
)  # fmt: skip
def test_against_the_model_file(tmp_path: Path, change: object, message: str) -> None:
    folder = add_sub(tmp_path, "m", "INT32", ("INT8", "INT8"), [16], config=False)
    (folder / "config.pbtxt").write_text("max_batch_size: 1\n" + change(_MODEL_IO))  # type: ignore[operator]
    with pytest.raises(BertserveError) as info:
        prepare_config(read_model_source("m", folder), None, gpus=[])
    assert message in str(info.value)

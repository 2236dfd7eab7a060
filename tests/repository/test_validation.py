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
    ("decoupled with response cache", "max_batch_size: 8\n" + _IO
     + "model_transaction_policy { decoupled: true }\nresponse_cache { enable: true }\n",
     "Response Cache does not currently support model m with 'decoupled' transaction policy"),
    ("sequence batching with response cache", "max_batch_size: 8\n" + _IO
     + "sequence_batching { }\nresponse_cache { enable: true }\n",
     "Response Cache does not currently support model m with sequence batching scheduler"),
    ("control tensor without name", "max_batch_size: 8\n" + _SEQ.format(
        "{ control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } ] }") + _IO,
     "sequence batching control tensor must have a name for m"),
    ("corrid with values", "max_batch_size: 8\n" + _SEQ.format(
        '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 '
        "int32_false_true: [0, 1] } ] }") + _IO,
     "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or "
     "'bool_false_true' for CONTROL_SEQUENCE_CORRID for m"),
    ("corrid type", "max_batch_size: 8\n" + _SEQ.format(
        '{ name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } ] }')
     + _IO, "unexpected data type for control CONTROL_SEQUENCE_CORRID for m"),
    ("control with two value kinds", "max_batch_size: 8\n" + _SEQ.format(
        '{ name: "S" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] '
        "fp32_false_true: [0, 1] } ] }") + _IO,
     "sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' "
     "and 'bool_false_true' for CONTROL_SEQUENCE_START for m"),
    ("control with three values", "max_batch_size: 8\n" + _SEQ.format(
        '{ name: "S" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1, 1] } ] }')
     + _IO, "sequence batching control 'int32_false_true' must have exactly 2 entries for "
     "CONTROL_SEQUENCE_START for m"),
    ("oldest preferred zero", "max_batch_size: 8\n" + _IO
     + "sequence_batching { oldest { preferred_batch_size: 0 } }\n",
     "sequence batching preferred batch size must be positive for m"),
    ("oldest preferred above max", "max_batch_size: 8\n" + _IO
     + "sequence_batching { oldest { preferred_batch_size: 16 } }\n",
     "sequence batching preferred batch size must be <= max batch size for m"),
    ("direct utilization", "max_batch_size: 8\n" + _IO
     + "sequence_batching { direct { minimum_slot_utilization: 1.5 } }\n",
     "sequence batching minimum slot utilization must be in range (0.0, 1.0] for m"),
    ("input without name", 'max_batch_size: 8\ninput { data_type: TYPE_FP32 dims: [16] }\n'
     'output { name: "output" data_type: TYPE_FP32 dims: [16] }\n',
     "model input must specify 'name' for m"),
    ("output without dims", 'max_batch_size: 8\ninput { name: "input" data_type: TYPE_FP32 '
     'dims: [16] }\noutput { name: "output" data_type: TYPE_FP32 }\n',
     "model output 'output' must specify 'dims' for m"),
    ("NHWC with two dims", "max_batch_size: 8\n"
     + _IO.replace("dims: [16] }\noutput", "dims: [4, 4] format: FORMAT_NHWC }\noutput"),
     "model input NHWC/NCHW require 3 dims for m"),
    ("shape tensor", "max_batch_size: 8\n"
     + _IO.replace("dims: [16] }\noutput", "dims: [16] is_shape_tensor: true }\noutput"),
     "shape tensors are only supported for TensorRT platform for m"),
    ("non-linear format", "max_batch_size: 8\n"
     + _IO.replace("dims: [16] }\noutput", "dims: [16] is_non_linear_format_io: true }\noutput"),
     "Non-linear IO format is only supported for the TensorRT platform for m"),
    ("batch input type", "max_batch_size: 8\n" + _IO + "batch_input [ { kind: "
     'BATCH_ELEMENT_COUNT target_name: "B" data_type: TYPE_INT64 source_input: "input" } ]\n',
     "batch input data type must be TYPE_INT32 or TYPE_FP32 for m"),
    ("batch output sources", "max_batch_size: 8\n" + _IO + 'batch_output [ { target_name: '
     '"output" kind: BATCH_SCATTER_WITH_INPUT_SHAPE } ]\n',
     "batch output kind 'BATCH_SCATTER_WITH_INPUT_SHAPE' expects 1 source input, got 0"),
    ("batch output unknown source", "max_batch_size: 8\n" + _IO + 'batch_output [ { '
     'target_name: "output" kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "NO" } ]\n',
     "unknown source input name 'NO' for m"),
    ("model group with gpus", "max_batch_size: 8\n" + _IO
     + "instance_group [ { kind: KIND_MODEL gpus: [0] } ]\n",
     "instance group m_0 of model m has kind KIND_MODEL but specifies one or more GPUs"),
    ("gpu group without gpus", "max_batch_size: 8\n" + _IO
     + "instance_group [ { kind: KIND_GPU } ]\n",
     "instance group m_0 of model m has kind KIND_GPU but no GPUs are available"),
    ("profile outside TensorRT", "max_batch_size: 8\n" + _IO
     + 'instance_group [ { kind: KIND_CPU profile: "0" } ]\n',
     "instance group m_0 of model m and platform onnxruntime_onnxspecifies profile field which "
     "is only supported for TensorRT models"),
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


def test_fields_the_repository_always_fills() -> None:
    """What a folder always provides (a name, a version policy, an instance group) is still
    checked, in tritonserver's words, for configs built elsewhere."""
    from tritonclient.grpc import model_config_pb2 as pb

    from bertserve.repository.validation import validate_instance_groups, validate_model_config

    with pytest.raises(BertserveError, match="model configuration must specify 'name'"):
        validate_model_config(pb.ModelConfig(backend="onnxruntime"))
    config = pb.ModelConfig(name="m", backend="onnxruntime", platform="onnxruntime_onnx")
    with pytest.raises(BertserveError, match="must specify 'version policy' for m"):
        validate_model_config(config)
    with pytest.raises(BertserveError, match="must specify one or more 'instance group's for m"):
        validate_instance_groups(config, [])
    auto = pb.ModelInstanceGroup(name="g", kind=pb.ModelInstanceGroup.KIND_AUTO)
    config.instance_group.append(auto)
    with pytest.raises(BertserveError, match="instance group g of model m has unexpected kind"):
        validate_instance_groups(config, [])
    gpu = pb.ModelInstanceGroup(name="g", kind=pb.ModelInstanceGroup.KIND_GPU)
    del config.instance_group[:]
    config.instance_group.append(gpu)
    with pytest.raises(BertserveError, match="has kind KIND_GPU but specifies no GPUs"):
        validate_instance_groups(config, [0])
    ensemble = pb.ModelConfig(name="e", backend="onnxruntime", platform="ensemble")
    with pytest.raises(BertserveError, match="Ensemble model 'e' must have platform type"):
        validate_model_config(ensemble)
    ensemble = pb.ModelConfig(name="e", platform="ensemble", version_policy={"latest": {}})
    with pytest.raises(BertserveError, match="ensemble scheduling must be set for ensemble e"):
        validate_model_config(ensemble)
    validate_instance_groups(pb.ModelConfig(name="e", ensemble_scheduling={}), [])

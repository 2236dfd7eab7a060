"""Request data: generated tensors and perf_analyzer's input-data JSON, good and bad."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertserve.perf.input_data import InputDataError, InputSpec, build_input_sets, input_specs

SPECS = [
    InputSpec("input_ids", "INT64", (-1,)),
    InputSpec("attention_mask", "INT64", (-1,)),
    InputSpec("token_type_ids", "INT64", (-1,)),
]
SHAPES = {name: (8,) for name in ("input_ids", "attention_mask", "token_type_ids")}


def _write(tmp_path: Path, doc: Any) -> str:
    path = tmp_path / "data.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def _entry(length: int = 8) -> dict[str, Any]:
    return {
        "input_ids": {"content": [101] + [7] * (length - 2) + [102], "shape": [length]},
        "attention_mask": {"content": [1] * length, "shape": [length]},
        "token_type_ids": {"content": [0] * length, "shape": [length]},
    }


def test_specs_drop_the_batch_dimension() -> None:
    meta = {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 4]}]}
    assert input_specs(meta, 8) == [InputSpec("x", "FP32", (3, 4))]
    assert input_specs(meta, 0) == [InputSpec("x", "FP32", (-1, 3, 4))]
    with pytest.raises(InputDataError, match="declares no inputs"):
        input_specs({"name": "m", "inputs": []}, 0)


@pytest.mark.parametrize("source", ["zero", "random"])
def test_generated_data_has_the_batch_and_shape(source: str) -> None:
    (inputs,) = build_input_sets(SPECS, source, batch_size=2, batched=True, shapes=SHAPES)
    for spec in SPECS:
        array = inputs[spec.name]
        assert array.shape == (2, 8) and array.dtype == np.int64
        # Valid token ids, masks and segment ids for any BERT.
        assert set(np.unique(array)) <= {0, 1}
    if source == "zero":
        assert not inputs["input_ids"].any()


def test_generated_bytes_and_floats() -> None:
    specs = [InputSpec("text", "BYTES", (1,)), InputSpec("f", "FP16", (3,))]
    (inputs,) = build_input_sets(specs, "random", batch_size=1, batched=False, string_length=5)
    assert inputs["text"].shape == (1,) and len(inputs["text"][0]) == 5
    assert inputs["f"].dtype == np.float16


def test_variable_dims_need_a_shape() -> None:
    with pytest.raises(InputDataError, match=r"--shape input_ids:128"):
        build_input_sets(SPECS, "zero", batch_size=1, batched=True)
    with pytest.raises(InputDataError, match="unknown input"):
        build_input_sets(SPECS, "zero", batch_size=1, batched=True, shapes={"nope": (3,)})
    with pytest.raises(InputDataError, match="does not fit"):
        build_input_sets(
            [InputSpec("x", "FP32", (3,))], "zero", batch_size=1, batched=True, shapes={"x": (4,)}
        )
    with pytest.raises(InputDataError, match="does not batch"):
        build_input_sets([InputSpec("x", "FP32", (3,))], "zero", batch_size=2, batched=False)


def test_json_content_shape_flat_and_b64(tmp_path: Path) -> None:
    second = _entry(4)
    second["attention_mask"] = [1, 1, 1, 1]  # flat list: shape from --shape
    raw = np.arange(4, dtype=np.int64)
    second["token_type_ids"] = {"b64": base64.b64encode(raw.tobytes()).decode(), "shape": [4]}
    path = _write(tmp_path, {"data": [_entry(8), second]})
    sets = build_input_sets(
        SPECS, path, batch_size=3, batched=True, shapes={"attention_mask": (4,)}
    )
    assert len(sets) == 2
    assert sets[0]["input_ids"].shape == (3, 8)
    assert sets[0]["input_ids"][2, 0] == 101
    assert sets[1]["attention_mask"].shape == (3, 4)
    assert sets[1]["token_type_ids"][0].tolist() == [0, 1, 2, 3]


def test_json_bytes_inputs(tmp_path: Path) -> None:
    specs = [InputSpec("question", "BYTES", (1,)), InputSpec("context", "BYTES", (1,))]
    doc = {"data": [{"question": {"content": ["Who?"], "shape": [1]}, "context": ["Ada wrote."]}]}
    (inputs,) = build_input_sets(specs, _write(tmp_path, doc), batch_size=1, batched=False)
    assert inputs["question"].tolist() == [b"Who?"]
    assert inputs["context"].tolist() == [b"Ada wrote."]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('{"data": [', r"line 1 column \d+: invalid JSON"),
        ({"rows": []}, r'expected perf_analyzer\'s format \{"data"'),
        ({"data": []}, '"data" is empty'),
        ({"data": [[{"input_ids": [1]}]]}, "sequence models are not supported"),
        (
            {"data": [{"input_ids": [1] * 8}]},
            r"data\[0\]: input\(s\) attention_mask, token_type_ids missing",
        ),
        ({"data": [{**_entry(), "extra": [1]}]}, "unknown input.*extra"),
        (
            {"data": [{**_entry(), "input_ids": {"content": [1, 2], "shape": [3]}}]},
            r"data\[0\]\.input_ids: 2 values but shape \[3\] needs 3",
        ),
        (
            {"data": [{**_entry(), "input_ids": {"content": [1.5] * 8, "shape": [8]}}]},
            "must be integers, not decimals",
        ),
        (
            {"data": [{**_entry(), "input_ids": {"content": ["a"] * 8, "shape": [8]}}]},
            "INT64 content must be numbers",
        ),
        ({"data": [{**_entry(), "input_ids": {"shape": [8]}}]}, "needs 'content'"),
        (
            {"data": [{**_entry(), "input_ids": {"content": [1] * 8, "shape": "8"}}]},
            "'shape' must be a list",
        ),
        ({"data": [{**_entry(), "input_ids": {"b64": "!!", "shape": [8]}}]}, "not valid base64"),
        (
            {"data": [{**_entry(), "input_ids": {"b64": "AAAA", "shape": [8]}}]},
            "b64 decodes to 3 bytes but shape \\[8\\] of INT64 needs 64",
        ),
        ({"data": [{**_entry(), "input_ids": [1] * 8}]}, "no 'shape' given, and input 'input_ids'"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, doc: Any, message: str) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(InputDataError, match=message) as info:
        build_input_sets(SPECS, path, batch_size=1, batched=True)
    assert str(tmp_path) in str(info.value)


def test_missing_file_says_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="no such file.*zero, random or a JSON file"):
        build_input_sets(SPECS, str(tmp_path / "absent.json"), batch_size=1, batched=True)

"""The `tiny` preset: the repository layout the server and QA pipeline rely on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.builder import REPORT_FILE, TOKENIZER_DIR, BuildOutcome
from bertserve.cli import main

NAME = "bert_tiny_onnx_cpu"


def _config(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )


def test_layout_and_config(tiny_build: BuildOutcome) -> None:
    model_dir = tiny_build.repository / NAME
    config = _config(model_dir)
    assert config.name == NAME
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    # Triton's default (max_batch_size) is left out, so tools that vary max_batch_size can.
    assert list(config.dynamic_batching.preferred_batch_size) == []
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    # Like the reference repository: the server completes inputs/outputs from the model.
    assert not config.input and not config.output
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["weights"] == "random"
    assert params["tokenizer"] == TOKENIZER_DIR
    assert params["tokenizer_generated"] == "true"
    # the embedding tables' sizes, which the server checks requests against
    assert params["vocab_size"] == "1024" and params["type_vocab_size"] == "2"
    assert params["max_position_embeddings"] == "512"
    # No leftovers: the model and the QA pipeline written beside it.
    assert sorted(p.name for p in tiny_build.repository.iterdir()) == [NAME, f"{NAME}_qa"]


def test_a_qa_pipeline_is_written_beside_the_model(tiny_build: BuildOutcome) -> None:
    from bertserve.backends.qa_pipeline import PipelineSettings

    pipeline_dir = tiny_build.repository / f"{NAME}_qa"
    config = _config(pipeline_dir)
    assert config.backend == "bertserve_qa"
    assert (pipeline_dir / "1").is_dir()
    settings = PipelineSettings.from_config(config)  # what the server reads at load
    assert settings.qa_model == NAME
    assert settings.qa_inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert settings.windows.max_seq_len == 384
    assert settings.max_windows_per_call <= 8  # the QA model's max_batch_size
    assert not settings.spans.allow_impossible  # not a SQuAD 2.0 model
    assert tiny_build.pipelines == [f"{NAME}_qa"]
    assert f"QA pipelines (text in, answer out; `bertserve ask -m NAME`): {NAME}_qa" in (
        tiny_build.summary()
    )


def test_onnx_graph_has_dynamic_batch_and_sequence(tiny_build: BuildOutcome) -> None:
    graph = onnx.load(str(tiny_build.repository / NAME / "1" / "model.onnx")).graph
    ins = {i.name: i for i in graph.input}
    assert list(ins) == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in (*graph.input, *graph.output):
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"], tensor.name
    assert ins["input_ids"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [o.name for o in graph.output] == ["start_logits", "end_logits"]


def test_runs_any_batch_and_length_and_tokenizer_loads(tiny_build: BuildOutcome) -> None:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    version = tiny_build.repository / NAME / "1"
    tokenizer = AutoTokenizer.from_pretrained(str(version / TOKENIZER_DIR))
    enc = tokenizer(["Who?"] * 3, ["Gustave Eiffel built it."] * 3, return_tensors="np")
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    start, end = session.run(None, {k: v.astype(np.int64) for k, v in enc.items()})
    assert start.shape == end.shape == enc["input_ids"].shape


def test_report_holds_parity_numbers(tiny_build: BuildOutcome) -> None:
    report = json.loads((tiny_build.repository / NAME / "1" / REPORT_FILE).read_text())
    parity = report["parity"]
    assert parity["passed"] and parity["samples"] == 8 and parity["seq_len"] == 128
    assert parity["max_abs_error"] < 1e-4
    assert parity["agreement"] == 1.0
    assert report["weights"] == "random"
    assert report["fused_operators"]["Attention"] == 2
    summary = tiny_build.summary()
    assert NAME in summary and "weights are random" in summary


def test_cli_builds_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "models"
    assert main(["build", "--preset", "tiny", "--output", str(repo), "--precision", "int8"]) == 0
    first = (repo / f"{NAME}_int8" / "1" / "model.onnx").read_bytes()
    assert main(["build", "--preset", "tiny", "--output", str(repo), "--precision", "int8"]) == 1
    err = capsys.readouterr().err
    assert "already holds bert_tiny_onnx_cpu_int8, bert_tiny_onnx_cpu_int8_qa: pass --force" in err
    assert (repo / f"{NAME}_int8" / "1" / "model.onnx").read_bytes() == first
    args = ["build", "--preset", "tiny", "--output", str(repo), "--precision", "int8"]
    assert main([*args, "--force", "--seed", "7"]) == 0
    assert (repo / f"{NAME}_int8" / "1" / "model.onnx").read_bytes() != first
    assert sorted(p.name for p in repo.iterdir()) == [f"{NAME}_int8", f"{NAME}_int8_qa"]


def test_cli_shows_each_stage_on_stderr_and_the_summary_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["build", "--preset", "tiny", "--output", str(tmp_path / "m"), "--no-qa-pipeline"]
    assert main(args) == 0
    captured = capsys.readouterr()
    stages = [line.split("] ", 1)[1] for line in captured.err.splitlines() if " done in " in line]
    assert [s.rsplit(" done in ", 1)[0] for s in stages] == [
        "tiny: loading the random checkpoint",
        "tiny: exporting to ONNX",
        "tiny: optimizing (ONNX Runtime transformer fusion)",
        f"{NAME}: writing the fused fp32 model",
        "tiny: reference logits at seq 128 (transformers)",
        f"{NAME}: parity against transformers fp32",
    ]
    assert captured.out.startswith("bertserve build --preset tiny: 1 of 1 models")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [NAME]  # no pipeline asked


def test_cli_without_the_build_extra_names_it_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    for module in ("torch", "transformers"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    assert main(["build", "--preset", "tiny", "--output", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err == (
        "bertserve build needs the build extra (torch, transformers missing): "
        "pip install 'bertserve[build]'\n"
    )
    assert not (tmp_path / "m").exists()


def test_perf_analyzer_input_data_holds_real_tokenized_requests(tiny_build: BuildOutcome) -> None:
    from bertserve.builder.model_config import PERF_INPUT_FILE

    doc = json.loads((tiny_build.repository / NAME / PERF_INPUT_FILE).read_text())
    vocab = (tiny_build.repository / NAME / "1" / TOKENIZER_DIR / "vocab.txt").read_text()
    vocab_size = len(vocab.splitlines())
    assert len(doc["data"]) > 1
    for sample in doc["data"]:
        assert sorted(sample) == ["attention_mask", "input_ids", "token_type_ids"]
        for tensor in sample.values():
            assert tensor["shape"] == [128] and len(tensor["content"]) == 128
        ids = sample["input_ids"]["content"]
        assert all(0 <= i < vocab_size for i in ids) and len(set(ids)) > 10
        assert set(sample["attention_mask"]["content"]) == {0, 1}

"""The QA pipeline backend in-process: call_model runs the toy ONNX model with onnxruntime."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2 as pb

from bertserve.backends.base import Device, LoadContext, get_backend
from bertserve.backends.qa_pipeline import OUTPUTS, PipelineSettings, QAPipelineInstance
from bertserve.errors import ConfigError, InternalError, InvalidInput
from bertserve.qa.squad import load_squad, sample_path
from tests.qa.qa_toys import (
    BAD_ITEMS,
    onnx_call_model,
    steered_table,
    with_bad_second,
    write_repository,
)

QUESTION = "What fuel did the keepers switch to in 1890?"


def _config(root: Path, name: str = "qa") -> pb.ModelConfig:
    config = pb.ModelConfig()
    text_format.Parse((root / name / "config.pbtxt").read_text(), config)
    config.name = name
    return config


def _load(root: Path, calls: list[tuple[int, ...]] | None = None) -> QAPipelineInstance:
    backend = get_backend("bertserve_qa")
    config = _config(root)
    backend.autocomplete(config, root / "qa" / "1")
    call = onnx_call_model(root / "toy_qa" / "1" / "model.onnx", calls)
    instance = backend.load(config, root / "qa" / "1", Device(), LoadContext("qa", 1, call))
    assert isinstance(instance, QAPipelineInstance)
    return instance


def _inputs(questions: list[str], contexts: list[str]) -> dict[str, np.ndarray]:
    return {
        "question": np.array([q.encode() for q in questions], dtype=object).reshape(-1, 1),
        "context": np.array([c.encode() for c in contexts], dtype=object).reshape(-1, 1),
    }


@pytest.fixture
def sample() -> dict[str, str]:
    _, examples = load_squad(sample_path())
    return {e.id: e.context for e in examples}


def test_autocomplete_fills_the_signature(repo: Path) -> None:
    config = _config(repo)
    get_backend("bertserve_qa").autocomplete(config, repo / "qa" / "1")
    assert {t.name: pb.DataType.Name(t.data_type) for t in config.input} == {
        "question": "TYPE_STRING",
        "context": "TYPE_STRING",
    }
    assert {t.name: pb.DataType.Name(t.data_type) for t in config.output} == OUTPUTS
    assert all(list(t.dims) == [1] for t in [*config.input, *config.output])


def test_autocomplete_refuses_wrong_tensors(repo: Path) -> None:
    config = _config(repo)
    config.input.add(name="passage", data_type=pb.TYPE_STRING, dims=[1])
    with pytest.raises(ConfigError, match="'passage' is not a tensor"):
        get_backend("bertserve_qa").autocomplete(config, repo / "qa" / "1")
    config = _config(repo)
    config.output.add(name="score", data_type=pb.TYPE_FP16, dims=[1])
    with pytest.raises(ConfigError, match="'score' must have data_type TYPE_FP32"):
        get_backend("bertserve_qa").autocomplete(config, repo / "qa" / "1")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("qa_model", "", "qa_model is missing"),
        ("max_seq_len", "lots", "max_seq_len must be an integer"),
        ("doc_stride", "500", "doc_stride 500"),
        ("buckets", "64,1024", "must not exceed max_seq_len"),
        ("max_windows_per_call", "0", "max_windows_per_call"),
        ("qa_inputs", "ids,mask", "qa_inputs"),
        ("null_threshold", "high", "null_threshold must be a number"),
        ("allow_impossible", "maybe", "allow_impossible must be true or false"),
        ("max_answer_len", "0", "max_answer_len must be at least 1"),
        ("tokenizer", "nowhere/tokenizer.json", "is not a file"),
        ("buckets", "64,abc", "buckets must list integers"),
        ("buckets", "0,64", "buckets must list integers"),
        ("qa_outputs", "start_logits", "qa_outputs must name two outputs"),
        ("qa_model", "../toy_qa", "qa_model must be the name of a model"),
        ("qa_model_version", "../1", "qa_model_version must be a version number"),
    ],
)
def test_bad_parameters_are_config_errors(repo: Path, key: str, value: str, message: str) -> None:
    config = _config(repo)
    config.parameters[key].string_value = value
    with pytest.raises(ConfigError, match=message):
        get_backend("bertserve_qa").autocomplete(config, repo / "qa" / "1")


@pytest.mark.parametrize(("text", "expected"), [("yes", True), ("on", True), ("No", False)])
def test_booleans_are_spelled_as_everywhere_else(repo: Path, text: str, expected: bool) -> None:
    config = _config(repo)
    config.parameters["allow_impossible"].string_value = text
    assert PipelineSettings.from_config(config).spans.allow_impossible is expected


def test_buckets_are_sorted_deduplicated_and_end_at_max_seq_len(repo: Path) -> None:
    config = _config(repo)
    config.parameters["buckets"].string_value = "64, 32,32"
    assert PipelineSettings.from_config(config).buckets == (32, 64, 128)
    config.parameters["max_seq_len"].string_value = "384"
    del config.parameters["buckets"]
    assert PipelineSettings.from_config(config).buckets == (64, 128, 256, 384)
    config.parameters["max_seq_len"].string_value = "48"
    config.parameters["max_query_len"].string_value = "8"
    config.parameters["doc_stride"].string_value = "8"
    assert PipelineSettings.from_config(config).buckets == (48,)


def test_tokenizer_parameter_is_confined_to_the_pipeline_folder(repo: Path) -> None:
    # Inside the pipeline's own folder (relative to its version folder): taken.
    shutil.copytree(repo / "toy_qa" / "1" / "tokenizer", repo / "qa" / "tokenizer")
    config = _config(repo)
    config.parameters["tokenizer"].string_value = "../tokenizer"
    get_backend("bertserve_qa").autocomplete(config, repo / "qa" / "1")
    # Another model's folder, or anywhere else: refused, whether the file exists or not.
    for outside in ("../../toy_qa/1/tokenizer", str(repo / "toy_qa" / "1" / "tokenizer")):
        config = _config(repo)
        config.parameters["tokenizer"].string_value = outside
        with pytest.raises(ConfigError, match="parameters.tokenizer .* leads outside"):
            get_backend("bertserve_qa").autocomplete(config, repo / "qa" / "1")


def test_tokenizer_is_found_next_to_the_qa_model(repo: Path) -> None:
    settings = PipelineSettings.from_config(_config(repo))
    assert settings.qa_model == "toy_qa"
    instance = _load(repo)
    assert instance.settings.buckets == (32, 64, 128)


def test_answers_a_batch_with_offsets(repo: Path, sample: dict[str, str]) -> None:
    instance = _load(repo)
    contexts = [sample["hm-4"], sample["sd-1"]]
    out = instance.run(_inputs([QUESTION, "What lives in a starter?"], contexts), list(OUTPUTS))
    assert out["answer"].shape == (2, 1)
    assert out["answer"][0, 0] == b"paraffin"
    start, end = int(out["start_char"][0, 0]), int(out["end_char"][0, 0])
    assert contexts[0][start:end] == "paraffin"
    assert out["score"].dtype == np.float32 and 0.9 < out["score"][0, 0] <= 1.0
    assert out["is_impossible"].dtype == bool and not out["is_impossible"].any()
    # The second context has no "paraffin": some span is still returned, inside the context.
    second = out["answer"][1, 0].decode()
    assert second and second == contexts[1][out["start_char"][1, 0] : out["end_char"][1, 0]]


def test_only_requested_outputs_are_returned(repo: Path, sample: dict[str, str]) -> None:
    out = _load(repo).run(_inputs([QUESTION], [sample["hm-4"]]), ["answer"])
    assert list(out) == ["answer"]


def test_long_context_is_windowed_and_bucketed(repo: Path, sample: dict[str, str]) -> None:
    calls: list[tuple[int, ...]] = []
    instance = _load(repo, calls)
    long_context = sample["vt-1"] + " In 1890 the keepers switched to paraffin."
    out = instance.run(
        _inputs([QUESTION, QUESTION], [long_context, "It ran on paraffin."]), ["answer"]
    )
    assert [a[0] for a in out["answer"]] == [b"paraffin", b"paraffin"]
    lengths = {shape[1] for shape in calls}
    assert lengths <= {32, 64, 128}
    assert 32 in lengths and 128 in lengths  # the short pair was not padded to 128
    assert sum(shape[0] for shape in calls) > 2  # the long context gave several windows
    assert all(shape[0] <= 4 for shape in calls)  # max_windows_per_call


def test_every_call_of_a_batch_is_submitted_before_the_first_wait(
    repo: Path, sample: dict[str, str]
) -> None:
    events: list[str] = []
    call = onnx_call_model(repo / "toy_qa" / "1" / "model.onnx")

    def start(name: str, version: str, inputs: dict[str, np.ndarray]) -> Callable[[], dict]:
        events.append("start")
        result = call(name, version, inputs)

        def wait() -> dict[str, np.ndarray]:
            events.append("wait")
            return result

        return wait

    backend = get_backend("bertserve_qa")
    config = _config(repo)
    backend.autocomplete(config, repo / "qa" / "1")
    context = LoadContext("qa", 1, start_model=start)
    instance = backend.load(config, repo / "qa" / "1", Device(), context)
    long_context = sample["vt-1"] + " In 1890 the keepers switched to paraffin."
    out = instance.run(
        _inputs([QUESTION, QUESTION], [long_context, "It ran on paraffin."]), ["answer"]
    )
    assert [a[0] for a in out["answer"]] == [b"paraffin", b"paraffin"]
    calls = events.count("start")
    assert calls > 1
    assert events == ["start"] * calls + ["wait"] * calls


def test_a_failing_qa_model_fails_the_batch_with_its_name(repo: Path) -> None:
    def start(name: str, version: str, inputs: dict[str, np.ndarray]) -> Callable[[], dict]:
        def wait() -> dict[str, np.ndarray]:
            raise RuntimeError("device lost")

        return wait

    backend = get_backend("bertserve_qa")
    config = _config(repo)
    backend.autocomplete(config, repo / "qa" / "1")
    instance = backend.load(
        config, repo / "qa" / "1", Device(), LoadContext("qa", 1, start_model=start)
    )
    with pytest.raises(InternalError, match="QA model 'toy_qa' failed: device lost"):
        instance.run(_inputs([QUESTION], ["It ran on paraffin."]), ["answer"])


def test_unanswerable_with_a_squad2_style_model(tmp_path: Path, tokenizer: Tokenizer) -> None:
    table = steered_table(tokenizer, "paraffin", "paraffin")
    table[tokenizer.token_to_id("[CLS]")] = 9.0
    root = write_repository(tmp_path, tokenizer, table, {"allow_impossible": "true"})
    out = _load(root).run(_inputs([QUESTION], ["The lamp burned paraffin."]), list(OUTPUTS))
    assert out["is_impossible"][0, 0]
    assert out["answer"][0, 0] == b""
    assert out["start_char"][0, 0] == -1 and out["end_char"][0, 0] == -1


@pytest.mark.parametrize(("question", "context", "message"), BAD_ITEMS)
def test_bad_item_is_invalid_input(
    repo: Path, question: bytes, context: bytes, message: str
) -> None:
    instance = _load(repo)
    inputs = with_bad_second(question, context)
    with pytest.raises(InvalidInput, match=message):
        instance.check_request(inputs)
    with pytest.raises(InvalidInput, match=message):
        instance.run(inputs, ["answer"])


def test_context_without_tokens_has_no_answer_and_spares_the_batch(
    repo: Path, sample: dict[str, str]
) -> None:
    out = _load(repo).run(
        _inputs([QUESTION, QUESTION], ["\u200b\u200b", sample["hm-4"]]), list(OUTPUTS)
    )
    assert out["answer"][:, 0].tolist() == [b"", b"paraffin"]
    assert out["is_impossible"][:, 0].tolist() == [True, False]
    assert out["start_char"][0, 0] == -1


def test_context_limit_is_configurable(tmp_path: Path, tokenizer: Tokenizer) -> None:
    table = steered_table(tokenizer, "paraffin", "paraffin")
    root = write_repository(tmp_path, tokenizer, table, {"max_context_bytes": "100"})
    with pytest.raises(InvalidInput, match="at most 100"):
        _load(root).check_request(_inputs(["why?"], ["x" * 101]))


def test_mismatched_batch_counts(repo: Path) -> None:
    inputs = {
        "question": np.array([[b"a?"], [b"b?"]], dtype=object),
        "context": np.array([[b"text"]], dtype=object),
    }
    with pytest.raises(InvalidInput, match="'question' has 2 items but input 'context' has 1"):
        _load(repo).check_request(inputs)


def test_load_without_call_model_is_config_error(repo: Path) -> None:
    config = _config(repo)
    with pytest.raises(ConfigError, match="cannot call other models"):
        get_backend("bertserve_qa").load(config, repo / "qa" / "1", Device(), LoadContext("qa", 1))


@pytest.mark.parametrize(
    ("instances", "setting", "after"),
    [(8, None, "false"), (4, None, "false"), (2, None, None), (8, "false", "false"),
     (8, "true", "true"), (8, "", "")],
)  # fmt: skip
def test_many_instances_switch_the_tokenizer_pool_off_unless_the_user_chose(
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    instances: int,
    setting: str | None,
    after: str | None,
) -> None:
    """A pipeline of four instances or more, loaded with TOKENIZERS_PARALLELISM unset, turns
    the tokenizers library's pool off for the process and says so once (docs/qa.md: such a
    pipeline is faster without it); fewer instances leave it on; a value the user set, even
    an empty one, is kept. The pipeline answers either way."""
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "restored after the test")
    if setting is None:
        monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    else:
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", setting)
    backend = get_backend("bertserve_qa")
    config = _config(repo)
    del config.instance_group[:]
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    backend.autocomplete(config, repo / "qa" / "1")
    call = onnx_call_model(repo / "toy_qa" / "1" / "model.onnx")
    with caplog.at_level("INFO", logger="bertserve.qa"):
        loaded = [
            backend.load(config, repo / "qa" / "1", Device(), LoadContext("qa", 1, call))
            for _ in range(2)
        ]
    assert os.environ.get("TOKENIZERS_PARALLELISM") == after
    said = [r.getMessage() for r in caplog.records if r.name == "bertserve.qa"]
    if setting is None and after == "false":
        (line,) = said  # once, though two instances loaded
        assert f"runs {instances} pipeline instances" in line
        assert "TOKENIZERS_PARALLELISM=true before `bertserve serve` starts" in line
    else:
        assert said == []
    inputs = _inputs([QUESTION], ["It ran on paraffin."])
    try:
        for instance in loaded:
            assert instance.run(inputs, list(OUTPUTS))["answer"][0, 0] == b"paraffin"
    finally:
        for instance in loaded:
            instance.close()

"""The QA pipeline through the real server: tritonclient over HTTP (and gRPC where served),
`bertserve ask` / `bertserve eval`, and perf_analyzer with texts in --input-data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

from bertserve.cli import main
from bertserve.perf.analyzer import profile
from bertserve.qa.client import AnswerClient
from bertserve.qa.squad import load_squad, sample_path
from tests.conftest import TINY, ServerProcess, needs_perf_analyzer, start_server
from tests.qa.qa_toys import steered_table, write_repository

pytestmark = pytest.mark.e2e

QUESTION = "What fuel did the keepers switch to in 1890?"
CONTEXT = "Its original lamp burned whale oil, but keepers switched to paraffin in 1890."
# No dynamic batching on the pipeline: each request runs alone; the QA model behind it still
# batches windows from concurrent pipeline runs.
PER_REQUEST = (
    'backend: "bertserve_qa"\nmax_batch_size: 8\ninstance_group { count: 2 kind: KIND_CPU }\n'
    'parameters { key: "qa_model" value { string_value: "toy_qa" } }\n'
)
# Dynamic batching with a long delay, so concurrent requests share a batch.
SLOW_BATCH = (
    'backend: "bertserve_qa"\nmax_batch_size: 8\n'
    "dynamic_batching { max_queue_delay_microseconds: 200000 }\n"
    'parameters { key: "qa_model" value { string_value: "toy_qa" } }\n'
)

# The text work in processes of the instances' own, batching as SLOW_BATCH does.
PROCESSES = (
    'backend: "bertserve_qa"\nmax_batch_size: 8\ninstance_group { count: 2 kind: KIND_CPU }\n'
    "dynamic_batching { max_queue_delay_microseconds: 200000 }\n"
    'parameters { key: "qa_model" value { string_value: "toy_qa" } }\n'
    'parameters { key: "processes" value { string_value: "true" } }\n'
)


@pytest.fixture(scope="module")
def qa_server(
    tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("qa_repo")
    write_repository(root, tokenizer, steered_table(tokenizer, "paraffin", "paraffin"), {})
    for name, config in (
        ("qa_per_request", PER_REQUEST),
        ("qa_slow_batch", SLOW_BATCH),
        ("qa_processes", PROCESSES),
    ):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
    server = start_server(root)
    yield server
    server.stop()


def _texts(*texts: str | bytes) -> np.ndarray:
    return np.array(
        [t if isinstance(t, bytes) else t.encode() for t in texts], dtype=object
    ).reshape(-1, 1)


def _infer(
    url: str, model: str, questions: np.ndarray, contexts: np.ndarray
) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(url)
    try:
        tensors = []
        for name, data in (("question", questions), ("context", contexts)):
            tensor = httpclient.InferInput(name, list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            tensors.append(tensor)
        result = client.infer(model, tensors)
        return {
            n: result.as_numpy(n)
            for n in ("answer", "score", "start_char", "end_char", "is_impossible")
        }
    finally:
        client.close()


@pytest.mark.parametrize("model", ["qa", "qa_processes"])
def test_http_answer_with_offsets(qa_server: ServerProcess, model: str) -> None:
    out = _infer(
        qa_server.http_url, model, _texts(QUESTION, "Why?"), _texts(CONTEXT, "Because of paraffin.")
    )
    assert out["answer"][:, 0].tolist() == [b"paraffin", b"paraffin"]
    start, end = int(out["start_char"][0, 0]), int(out["end_char"][0, 0])
    assert CONTEXT[start:end] == "paraffin"
    assert out["score"].dtype == np.float32
    assert not out["is_impossible"].any()


def test_long_context_through_the_server(qa_server: ServerProcess) -> None:
    _, examples = load_squad(sample_path())
    long_context = max((e.context for e in examples), key=len) + " " + CONTEXT
    with AnswerClient(qa_server.http_url, "qa") as client:
        [answer] = client.ask([QUESTION], [long_context])
    assert answer.text == "paraffin"
    assert long_context[answer.start_char : answer.end_char] == "paraffin"


@pytest.mark.parametrize("model", ["qa_per_request", "qa_processes"])
@pytest.mark.parametrize(
    ("question", "context", "message"),
    [
        (b"", CONTEXT.encode(), "input 'question' item 0 is empty"),
        (QUESTION.encode(), b"\xff\xfe", "input 'context' item 0 is not valid UTF-8"),
        (QUESTION.encode(), b"x" * 70_000, "input 'context' item 0 is 70000 bytes"),
    ],
)
def test_bad_input_is_a_clear_400(
    qa_server: ServerProcess, model: str, question: bytes, context: bytes, message: str
) -> None:
    with pytest.raises(InferenceServerException, match=message) as info:
        _infer(qa_server.http_url, model, _texts(question), _texts(context))
    assert info.value.status() == "400"


def test_mismatched_batch_counts_are_refused(qa_server: ServerProcess) -> None:
    with pytest.raises(InferenceServerException, match="question|context"):
        _infer(qa_server.http_url, "qa", _texts(QUESTION, QUESTION), _texts(CONTEXT))


def _good_and_bad_together(url: str, model: str) -> tuple[object, object]:
    def good() -> object:
        return _infer(url, model, _texts(QUESTION), _texts(CONTEXT))["answer"][0, 0]

    def bad() -> object:
        try:
            return _infer(url, model, _texts(""), _texts(CONTEXT))
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        results = [pool.submit(good), pool.submit(bad)]
        return results[0].result(), results[1].result()


def test_bad_request_fails_alone_without_pipeline_batching(qa_server: ServerProcess) -> None:
    good, bad = _good_and_bad_together(qa_server.http_url, "qa_per_request")
    assert good == b"paraffin"
    assert isinstance(bad, InferenceServerException) and "is empty" in str(bad)


@pytest.mark.parametrize("model", ["qa_slow_batch", "qa_processes"])
def test_bad_request_fails_alone_in_a_dynamic_batch(qa_server: ServerProcess, model: str) -> None:
    good, bad = _good_and_bad_together(qa_server.http_url, model)
    assert good == b"paraffin"
    assert isinstance(bad, InferenceServerException) and "is empty" in str(bad)


@pytest.mark.parametrize("model", ["qa", "qa_processes"])
def test_grpc_answer(qa_server: ServerProcess, model: str) -> None:
    if "grpc" not in qa_server.ports:
        pytest.skip("this server build has no gRPC endpoint yet")
    out = _infer_grpc(qa_server.grpc_url, model, _texts(QUESTION), _texts(CONTEXT))
    assert out["answer"][0, 0] == b"paraffin"
    assert CONTEXT[out["start_char"][0, 0] : out["end_char"][0, 0]] == "paraffin"


def _infer_grpc(
    url: str, model: str, questions: np.ndarray, contexts: np.ndarray
) -> dict[str, np.ndarray]:
    """`_infer` over gRPC."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        tensors = []
        for name, data in (("question", questions), ("context", contexts)):
            tensor = grpcclient.InferInput(name, list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            tensors.append(tensor)
        result = client.infer(model, tensors)
        return {n: result.as_numpy(n) for n in ("answer", "start_char", "end_char")}
    finally:
        client.close()


def _text_processes(server: ServerProcess) -> list[int]:
    """The pids of the server's text processes (its children running qa_process)."""
    pids = []
    for task in Path(f"/proc/{server.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"bertserve.backends.qa_process" in command:
                pids.append(int(pid))
    return sorted(pids)


def test_a_text_process_that_dies_costs_one_batch_and_stop_ends_them_all(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    """Through the real server: a killed text process fails the one batch it held
    (a 500 naming the model), the pipeline answers again, and stopping the server leaves no
    text process behind."""
    write_repository(tmp_path, tokenizer, steered_table(tokenizer, "paraffin", "paraffin"), {})
    (tmp_path / "qa_processes" / "1").mkdir(parents=True)
    (tmp_path / "qa_processes" / "config.pbtxt").write_text(PROCESSES)
    server = start_server(tmp_path)
    try:
        children = _text_processes(server)
        assert len(children) == 2  # one per instance
        os.kill(children[0], signal.SIGKILL)
        answers: list[bytes] = []
        failures: list[InferenceServerException] = []
        for _ in range(20):  # until the killed one's instance took a batch and replaced it
            try:
                # two pairs: a lone pair is answered on the instance's thread
                out = _infer(
                    server.http_url,
                    "qa_processes",
                    _texts(QUESTION, QUESTION),
                    _texts(CONTEXT, CONTEXT),
                )
                answers.extend(out["answer"][:, 0])
            except InferenceServerException as exc:
                failures.append(exc)
            now = _text_processes(server)
            if len(now) == 2 and children[0] not in now:
                break
        else:
            pytest.fail(f"the killed text process was not replaced: {now}")
        assert len(failures) == 1 and set(answers) == {b"paraffin"}
        for failure in failures:
            assert failure.status() == "500"
            assert "model 'qa_processes': the text process" in str(failure)
        children = _text_processes(server)
    finally:
        server.stop()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists()


# The reference's GPU batching (max batch 4, preferred 4, 200 ms): here 2 s, so that a wait
# cannot hide in a test's timing.
HOLDING_QA_MODEL = (
    'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
    "dynamic_batching { preferred_batch_size: [4] max_queue_delay_microseconds: 2000000 }\n"
    'parameters { key: "weights" value { string_value: "random" } }\n'
)


@pytest.mark.parametrize("processes", ["false", "true"])
def test_calls_are_never_held_for_the_qa_models_queue_delay(
    tmp_path: Path, tokenizer: Tokenizer, processes: str
) -> None:
    """Over a QA model that holds any batch but a full one for its queue delay, the
    pipeline's calls go at once (a pipeline has sent all of a batch's windows; nothing more
    of its own is coming): a lone question, and two long ones whose windows leave a partial
    call, are answered in well under the 2 s the model would hold them, and correctly, over
    HTTP and gRPC."""
    params = {"max_seq_len": "128", "doc_stride": "32", "processes": processes}
    write_repository(tmp_path, tokenizer, steered_table(tokenizer, "paraffin", "paraffin"), params)
    (tmp_path / "toy_qa" / "config.pbtxt").write_text(HOLDING_QA_MODEL)
    _, examples = load_squad(sample_path())
    long_context = max((e.context for e in examples), key=len) + " " + CONTEXT
    server = start_server(tmp_path)
    try:
        for infer, url in ((_infer, server.http_url), (_infer_grpc, server.grpc_url)):
            for questions, contexts in (
                (_texts(QUESTION), _texts(CONTEXT)),
                (_texts(QUESTION, QUESTION), _texts(long_context, long_context)),
            ):
                started = time.monotonic()
                out = infer(url, "qa", questions, contexts)
                assert time.monotonic() - started < 1.0
                assert set(out["answer"][:, 0]) == {b"paraffin"}
        stats = _statistics(server.http_url, "toy_qa")
        sizes = {int(b["batch_size"]) for b in stats["batch_stats"]}
        assert 1 in sizes  # the lone question's one window went alone, unpadded
        # an external client's partial batch is still held, as the config says
        started = time.monotonic()
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            ids = np.ones((1, 16), np.int64)
            tensors = []
            for name in ("input_ids", "attention_mask", "token_type_ids"):
                tensor = httpclient.InferInput(name, [1, 16], "INT64")
                tensor.set_data_from_numpy(ids if name != "token_type_ids" else ids * 0)
                tensors.append(tensor)
            client.infer("toy_qa", tensors)
        finally:
            client.close()
        assert time.monotonic() - started >= 1.9
    finally:
        server.stop()


def _statistics(url: str, model: str) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(url)
    try:
        (stats,) = client.get_inference_statistics(model)["model_stats"]
        return dict(stats)
    finally:
        client.close()


def test_ask_command(
    qa_server: ServerProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    passage = tmp_path / "passage.txt"
    passage.write_text(CONTEXT)
    assert (
        main(["ask", "-u", qa_server.http_url, "-m", "qa", QUESTION, "--context", str(passage)])
        == 0
    )
    out, err = capsys.readouterr()
    assert "answer: paraffin" in out
    start = CONTEXT.index("paraffin")
    assert f"characters {start}..{start + 8}" in out
    assert "random weights" in err  # toy_qa declares weights: random


def test_ask_command_reports_server_errors(
    qa_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "-u", qa_server.http_url, "-m", "qa", " ", "--context", CONTEXT]) == 1
    assert "input 'question' item 0 is empty" in capsys.readouterr().err


def test_eval_compare(
    qa_server: ServerProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "eval.json"
    argv = [
        "eval",
        "-u",
        qa_server.http_url,
        "--compare",
        "qa",
        "qa_per_request",
        "-b",
        "4",
        "--output",
        str(output),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "SQuAD v2.0: 23 questions" in out
    assert "qa_per_request: " in out and "100% same answers" in out
    report = json.loads(output.read_text())
    _, examples = load_squad(sample_path())
    for variant in report["variants"]:
        assert set(variant["predictions"]) == {e.id for e in examples}
        assert 0.0 <= variant["scores"]["f1"] <= 100.0
        assert variant["random_weights"] is True
    # The toy model always answers "paraffin" where it can: the one question whose gold is
    # "paraffin" scores, so EM is exactly 1 of 23.
    assert report["variants"][0]["scores"]["exact"] == pytest.approx(100 / 23)


@pytest.mark.perf_analyzer
@needs_perf_analyzer
def test_perf_analyzer_with_texts(qa_server: ServerProcess) -> None:
    data = Path(str(sample_path())).with_name("qa_perf_input.json")
    args = [
        "-m", "qa", "-u", qa_server.http_url, "-i", "http", "--input-data", str(data),
        "--concurrency-range", "2", "--measurement-mode", "count_windows",
        "--measurement-request-count", "40", "--stability-percentage", "100", "--max-trials", "10",
    ]  # fmt: skip
    (measurement,) = profile(args, timeout=180)
    assert measurement.throughput > 0


@pytest.fixture(scope="module")
def tiny_qa_server(
    tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The builder's tiny BERT (a real BERT graph, random weights) behind a QA pipeline that
    lives in a second repository."""
    from google.protobuf import text_format

    from bertserve.backends.qa_pipeline import pipeline_config

    root = tmp_path_factory.mktemp("tiny_qa_repo")
    # A pipeline reads only files inside its own folder: it gets a copy of the tokenizer.
    (root / "tiny_qa" / "1").mkdir(parents=True)
    shutil.copy(tiny_repo / TINY / "1" / "tokenizer" / "tokenizer.json", root / "tiny_qa" / "1")
    config = pipeline_config(
        "tiny_qa", TINY, {"tokenizer": "tokenizer.json", "max_seq_len": "256", "doc_stride": "64"}
    )
    (root / "tiny_qa" / "config.pbtxt").write_text(text_format.MessageToString(config))
    server = start_server(tiny_repo, root)
    yield server
    server.stop()


def test_tiny_bert_pipeline_answers_within_the_context(tiny_qa_server: ServerProcess) -> None:
    _, examples = load_squad(sample_path())
    with AnswerClient(tiny_qa_server.http_url, "tiny_qa", concurrency=2) as client:
        run = client.ask_all([e.question for e in examples], [e.context for e in examples], 4)
        assert client.random_weights() == [TINY]
    assert len(run.answers) == len(examples)
    for example, answer in zip(examples, run.answers, strict=True):
        assert not answer.is_impossible  # allow_impossible is off by default
        assert 0 <= answer.start_char < answer.end_char <= len(example.context)
        assert example.context[answer.start_char : answer.end_char] == answer.text
        assert 0.0 < answer.score <= 1.0

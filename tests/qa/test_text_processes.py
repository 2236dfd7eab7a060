"""The QA pipeline's text work in processes of its own (`processes: true`): the same answers
as on the instance's thread, the same refusals, and a child that dies or is closed costs
one batch at most."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2 as pb

from bertserve.backends.base import Device, LoadContext, get_backend
from bertserve.backends.qa_pipeline import OUTPUTS, PipelineSettings, QAPipelineInstance
from bertserve.backends.qa_process import TextProcess
from bertserve.backends.qa_text import TextWork
from bertserve.errors import ConfigError, InternalError, InvalidInput
from bertserve.qa.squad import load_squad, sample_path
from bertserve.qa.windows import Windower
from tests.qa.qa_toys import (
    BAD_ITEMS,
    onnx_call_model,
    with_bad_second,
)

QUESTION = "What fuel did the keepers switch to in 1890?"


def _config(root: Path, instances: int = 2, processes: str | None = None) -> pb.ModelConfig:
    config = pb.ModelConfig()
    text_format.Parse((root / "qa" / "config.pbtxt").read_text(), config)
    config.name = "qa"
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    if processes is not None:
        config.parameters["processes"].string_value = processes
    return config


@pytest.fixture
def load(repo: Path) -> Iterator[Callable[..., QAPipelineInstance]]:
    """Loads instances of `qa` (processes on unless said); closes them after the test."""
    loaded: list[QAPipelineInstance] = []

    def _load(
        processes: str = "true",
        start: Callable[..., Callable[[], dict[str, np.ndarray]]] | None = None,
    ) -> QAPipelineInstance:
        backend = get_backend("bertserve_qa")
        config = _config(repo, processes=processes)
        backend.autocomplete(config, repo / "qa" / "1")
        if start is None:
            context = LoadContext("qa", 1, onnx_call_model(repo / "toy_qa" / "1" / "model.onnx"))
        else:
            context = LoadContext("qa", 1, start_model=start)
        instance = backend.load(config, repo / "qa" / "1", Device(), context)
        assert isinstance(instance, QAPipelineInstance)
        loaded.append(instance)
        return instance

    yield _load
    for instance in loaded:
        instance.close()


def _inputs(questions: list[str], contexts: list[str]) -> dict[str, np.ndarray]:
    return {
        "question": np.array([q.encode() for q in questions], dtype=object).reshape(-1, 1),
        "context": np.array([c.encode() for c in contexts], dtype=object).reshape(-1, 1),
    }


def _child(instance: QAPipelineInstance) -> int:
    assert isinstance(instance.text, TextProcess)
    pid = instance.text.pid
    assert pid is not None
    return pid


def _gone(pid: int, seconds: float = 10.0) -> bool:
    """The process `pid` has exited and been reaped (no /proc entry left)."""
    deadline = time.monotonic() + seconds
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize(
    ("instances", "given", "expected"),
    [(1, None, False), (2, None, False), (4, None, True), (8, None, True), (8, "false", False),
     (2, "true", True), (2, "on", True)],
)  # fmt: skip
def test_processes_are_the_default_from_four_instances(
    repo: Path, instances: int, given: str | None, expected: bool
) -> None:
    config = _config(repo, instances, given)
    assert PipelineSettings.from_config(config).processes is expected


def test_a_misspelt_processes_is_a_config_error(repo: Path) -> None:
    with pytest.raises(ConfigError, match="processes must be true or false"):
        PipelineSettings.from_config(_config(repo, processes="maybe"))


def test_processes_answer_exactly_as_the_thread_does(
    load: Callable[..., QAPipelineInstance],
) -> None:
    """Every example of the bundled sample, one batch, plus a context without tokens: the
    same answer, score and offsets bit for bit (the same code on the same logits)."""
    _, examples = load_squad(sample_path())
    questions = [e.question for e in examples] + [QUESTION]
    contexts = [e.context for e in examples] + ["\u200b\u200b"]
    inputs = _inputs(questions, contexts)
    threaded = load("false")
    processed = load("true")
    assert isinstance(threaded.text, TextWork) and isinstance(processed.text, TextProcess)
    want = threaded.run(inputs, list(OUTPUTS))
    got = processed.run(inputs, list(OUTPUTS))
    assert set(got) == set(OUTPUTS)
    for name in OUTPUTS:
        assert got[name].shape == (len(questions), 1)
        assert got[name].dtype == want[name].dtype
        assert np.array_equal(got[name], want[name]), name
    assert got["is_impossible"][-1, 0] and got["answer"][-1, 0] == b""


@pytest.mark.parametrize(("question", "context", "message"), BAD_ITEMS)
def test_a_bad_text_is_refused_by_the_process_and_it_serves_on(
    load: Callable[..., QAPipelineInstance], question: bytes, context: bytes, message: str
) -> None:
    instance = load()
    pid = _child(instance)
    bad = with_bad_second(question, context)
    with pytest.raises(InvalidInput, match=message):
        instance.run(bad, ["answer"])
    out = instance.run(_inputs([QUESTION] * 2, ["It ran on paraffin."] * 2), ["answer"])
    assert out["answer"][:, 0].tolist() == [b"paraffin"] * 2
    assert _child(instance) == pid  # the same process answered


def test_a_dead_process_fails_one_batch_and_the_next_gets_a_new_one(
    load: Callable[..., QAPipelineInstance],
) -> None:
    instance = load()
    pid = _child(instance)
    os.kill(pid, signal.SIGKILL)
    pair = _inputs([QUESTION] * 2, ["It ran on paraffin."] * 2)
    with pytest.raises(InternalError, match=r"model 'qa': the text process .* exited \(code -9\)"):
        instance.run(pair, ["answer"])
    assert _gone(pid)
    assert instance.run(pair, ["answer"])["answer"][:, 0].tolist() == [b"paraffin"] * 2
    assert _child(instance) != pid


def test_a_lone_pair_is_answered_on_the_thread(load: Callable[..., QAPipelineInstance]) -> None:
    """A batch of one pair never reaches the process (its round trips would cost more than
    its GIL time): it is answered even with the process dead, which the next batch of two
    finds and replaces."""
    instance = load()
    pid = _child(instance)
    os.kill(pid, signal.SIGKILL)
    lone = _inputs([QUESTION], ["It ran on paraffin."])
    assert instance.run(lone, ["answer"])["answer"][0, 0] == b"paraffin"
    two = _inputs([QUESTION] * 2, ["It ran on paraffin."] * 2)
    with pytest.raises(InternalError, match="the text process"):
        instance.run(two, ["answer"])
    assert _gone(pid)
    assert instance.run(two, ["answer"])["answer"][:, 0].tolist() == [b"paraffin"] * 2


def test_a_failing_qa_model_fails_the_batch_and_the_next_batch_is_answered(
    repo: Path, load: Callable[..., QAPipelineInstance]
) -> None:
    call = onnx_call_model(repo / "toy_qa" / "1" / "model.onnx")
    failures = [RuntimeError("device lost")]

    def start(
        name: str, version: str, inputs: dict[str, np.ndarray]
    ) -> Callable[[], dict[str, np.ndarray]]:
        result = call(name, version, inputs)

        def wait() -> dict[str, np.ndarray]:
            if failures:
                raise failures.pop()
            return result

        return wait

    instance = load(start=start)
    inputs = _inputs([QUESTION] * 2, ["It ran on paraffin."] * 2)
    with pytest.raises(InternalError, match="QA model 'toy_qa' failed: device lost"):
        instance.run(inputs, ["answer"])
    assert instance.run(inputs, ["answer"])["answer"][:, 0].tolist() == [b"paraffin"] * 2


def test_close_ends_the_process(load: Callable[..., QAPipelineInstance]) -> None:
    instance = load()
    pid = _child(instance)
    instance.close()
    assert _gone(pid)
    instance.close()  # twice is harmless


def test_the_process_exits_when_its_parent_end_closes(
    load: Callable[..., QAPipelineInstance],
) -> None:
    """A parent that goes away without asking (killed) leaves EOF on the child's end: the
    child exits by itself instead of living on."""
    instance = load()
    assert isinstance(instance.text, TextProcess)
    child = instance.text._child
    assert child is not None and instance.text._conn is not None
    instance.text._conn.close()
    assert child.wait(10) == 0


def test_a_child_that_cannot_start_again_fails_the_batch_as_a_server_error(
    load: Callable[..., QAPipelineInstance], tmp_path: Path
) -> None:
    """The tokenizer gone after the load: the dead child's replacement cannot read it, and
    the batch fails as a server error naming the model, not as a load error."""
    instance = load()
    assert isinstance(instance.text, TextProcess)
    pid = _child(instance)
    instance.text.tokenizer = tmp_path / "gone" / "tokenizer.json"
    os.kill(pid, signal.SIGKILL)
    two = _inputs([QUESTION] * 2, ["It ran on paraffin."] * 2)
    with pytest.raises(InternalError, match="the text process"):
        instance.run(two, ["answer"])
    with pytest.raises(InternalError, match="model 'qa': a new text process could not start"):
        instance.run(two, ["answer"])


def test_a_child_that_cannot_read_its_tokenizer_fails_the_load(repo: Path, tmp_path: Path) -> None:
    settings = PipelineSettings.from_config(_config(repo))
    missing = tmp_path / "gone" / "tokenizer.json"
    with pytest.raises(ConfigError, match="cannot read tokenizer"):
        TextProcess("qa", settings, missing)


def test_logits_must_match_the_prepared_calls(repo: Path, tokenizer: Tokenizer) -> None:
    settings = PipelineSettings.from_config(_config(repo))
    work = TextWork(settings, Windower(tokenizer, settings.windows))
    with pytest.raises(InternalError, match="never prepared"):
        work.answer([])
    feeds = work.prepare(_inputs([QUESTION], ["It ran on paraffin."]))
    assert len(feeds) == 1
    with pytest.raises(InternalError, match="prepared 1 model calls but was given the logits of 0"):
        work.answer([])

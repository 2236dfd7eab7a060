"""Model control as Triton documents it, over HTTP and gRPC: readiness counts the models meant
to be loaded (`--strict-readiness`)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from tritonclient.utils import InferenceServerException

from tests.conftest import TINY, copy_model
from tests.frontends.conftest import BATCH2, running, settings, url
from tests.frontends.protocols import Client, feed

_BROKEN = BATCH2 + 'output { name: "start_logits" data_type: TYPE_INT8 dims: [-1] }\n'


def test_strict_readiness_counts_the_models_meant_to_be_loaded(
    tiny_repo: Path, tmp_path: Path, protocol: str
) -> None:
    repo = tmp_path / "repo"
    for name in ("a", "b"):
        copy_model(tiny_repo, TINY, repo, name, BATCH2)
    copy_model(tiny_repo, TINY, repo, "broken", _BROKEN)
    config = settings(repo, model_control_mode="explicit", load_models=["a", "b"])
    with running(config) as server, Client(protocol, url(server, protocol)) as client:
        assert client.is_server_ready()
        client.unload_model("b")  # unloaded on request: no longer meant to be loaded
        assert client.is_server_ready()
        client.infer("a", client.inputs(feed()))
        with pytest.raises(InferenceServerException):
            client.load_model("broken")  # meant to be loaded, and it is not: not ready
        assert not client.is_server_ready()
        client.unload_model("broken")
        assert client.is_server_ready()
        client.load_model("b")
        assert client.is_server_ready() and client.is_model_ready("b")


def test_without_strict_readiness_a_serving_server_is_ready(
    tiny_repo: Path, tmp_path: Path, protocol: str
) -> None:
    repo = tmp_path / "repo"
    copy_model(tiny_repo, TINY, repo, "good", BATCH2)
    copy_model(tiny_repo, TINY, repo, "broken", _BROKEN)
    for strict in (True, False):
        with (
            running(settings(repo, strict_readiness=strict, exit_on_error=False)) as server,
            Client(protocol, url(server, protocol)) as client,
        ):
            assert not client.is_model_ready("broken")
            assert client.is_server_ready() is not strict


_WARM = {"name": "w", "batch_size": 1, "inputs": {"input_ids": {
    "data_type": "TYPE_INT64", "dims": [16], "zero_data": True}}}  # fmt: skip
ABSURD = [  # (config override, words of the refusal)
    ({"max_batch_size": 2**31 - 1}, "max_batch_size 2147483647 is more than"),
    ({"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 10**15}},
     "would hold a request for more than a minute"),
    ({"max_batch_size": 2, "model_warmup": [{**_WARM, "batch_size": 3}]},
     "batch_size 3 exceeds max_batch_size 2"),
    ({"max_batch_size": 2, "model_warmup": [{**_WARM, "count": 10**9}]}, "count 1000000000"),
    ({"max_batch_size": 2, "model_warmup": [
        {**_WARM, "inputs": {"input_ids": {"data_type": "TYPE_INT64", "dims": [2**40],
                                           "zero_data": True}}}]},
     "more than the 67108864 a warm-up sample may take"),
]  # fmt: skip


def test_absurd_overrides_are_refused_and_the_model_keeps_serving(
    tiny_repo: Path, tmp_path: Path, protocol: str
) -> None:
    copy_model(tiny_repo, TINY, tmp_path / "repo", "m", BATCH2)
    config = settings(tmp_path / "repo", model_control_mode="explicit")
    with running(config) as server, Client(protocol, url(server, protocol)) as client:
        for override, words in ABSURD:
            with pytest.raises(InferenceServerException) as info:
                client.load_model("m", config=orjson.dumps(override).decode())
            assert info.value.status() == client.status(http=400, grpc="INVALID_ARGUMENT")
            assert words in str(info.value.message())
            client.load_model("m")  # as its repository has it
            client.infer("m", client.inputs(feed()))


BROKEN = {  # model folder -> what breaks it (each message once named a path)
    "no_version": None,
    "bad_config": "max_batch_size: two\n",
    "not_onnx": "garbage",
    "missing_file": 'default_model_filename: "missing.onnx"\n',
}


def test_errors_reveal_nothing_of_the_servers_paths(
    tiny_repo: Path, tmp_path: Path, protocol: str
) -> None:
    repo = tmp_path / "repo"
    for name, breakage in BROKEN.items():
        if name == "no_version":
            (repo / name).mkdir(parents=True)
            (repo / name / "config.pbtxt").write_text(BATCH2)
        elif name == "not_onnx":
            copy_model(tiny_repo, TINY, repo, name, BATCH2)
            (repo / name / "1" / "model.onnx").write_text(str(breakage))
        else:
            copy_model(tiny_repo, TINY, repo, name, BATCH2 + str(breakage))
    config = settings(repo, exit_on_error=False)  # the broken models are the point
    with running(config) as server, Client(protocol, url(server, protocol)) as client:
        told = [row.reason for row in client.index().models]
        for name in BROKEN:
            with pytest.raises(InferenceServerException) as info:
                client.infer(name, client.inputs(feed()))
            told.append(str(info.value.message()))
        assert all(told) and len(told) == 2 * len(BROKEN), told
        for message in told:
            assert str(tmp_path) not in message and str(repo.resolve()) not in message, message


def test_paths_a_config_names_stay_in_the_models_folder(
    tiny_repo: Path, tmp_path: Path, protocol: str
) -> None:
    """A load request may name files in its config override: a path that leaves the model's
    folder (relative, absolute, or through a link) is refused, saying nothing of what is
    there, and nothing outside is read."""
    repo = tmp_path / "repo"
    copy_model(tiny_repo, TINY, repo, "m", BATCH2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.onnx").write_bytes((tiny_repo / TINY / "1" / "model.onnx").read_bytes())
    (elsewhere / "data.bin").write_bytes(bytes(8 * 16))
    (repo / "m" / "warmup").mkdir()
    for folder in ("1", "warmup"):  # where each field's paths start
        (repo / "m" / folder / "link.onnx").symlink_to(elsewhere / "model.onnx")
    outside = {
        "../../../elsewhere/model.onnx": True,  # exists (a model that would load)
        "../../../elsewhere/missing.onnx": False,
        str(elsewhere / "model.onnx"): True,
        "link.onnx": True,
        "/etc/passwd": True,
    }
    warm = {"name": "w", "batch_size": 1, "inputs": {"input_ids": {
        "data_type": "TYPE_INT64", "dims": [16]}}}  # fmt: skip
    config = settings(repo, model_control_mode="explicit")
    with running(config) as server, Client(protocol, url(server, protocol)) as client:
        told = set()
        for path in outside:
            for override in (
                {"max_batch_size": 2, "backend": "onnxruntime", "default_model_filename": path},
                {"max_batch_size": 2, "model_warmup": [{**warm, "inputs": {"input_ids": {
                    **warm["inputs"]["input_ids"], "input_data_file": path}}}]},
            ):  # fmt: skip
                with pytest.raises(InferenceServerException) as info:
                    client.load_model("m", config=orjson.dumps(override).decode())
                message = str(info.value.message())
                assert "leads outside the model's folder" in message, message
                told.add(message.replace(path, "<path>"))
        assert len(told) == 2  # one message per field, whatever lies at the path
        assert all(str(tmp_path) not in m and "bytes" not in m for m in told)
        client.load_model("m")
        client.infer("m", client.inputs(feed()))


def test_a_failed_reload_keeps_the_loaded_model_serving(
    tiny_repo: Path, tmp_path: Path, protocol: str
) -> None:
    copy_model(tiny_repo, TINY, tmp_path / "repo", "m", BATCH2)
    config = settings(tmp_path / "repo", model_control_mode="explicit", load_models=["m"])
    with running(config) as server, Client(protocol, url(server, protocol)) as client:
        bad = {"max_batch_size": 2, "dynamic_batching": {"preferred_batch_size": [9]}}
        with pytest.raises(
            InferenceServerException, match="preferred size must be <= max batch size"
        ) as info:
            client.load_model("m", config=orjson.dumps(bad).decode())
        assert info.value.status() == client.status(http=400, grpc="INVALID_ARGUMENT")
        assert client.is_model_ready("m") and client.is_server_ready()
        assert client.config("m").max_batch_size == 2  # the config it was loaded with
        client.infer("m", client.inputs(feed(batch=2)))

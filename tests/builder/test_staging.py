"""All-or-nothing output: refuse occupied names without --force, replace whole models with it,
and leave the repository as it was on any failure, a full disk included."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from bertserve.builder import BuildError, build_preset
from bertserve.builder.staging import STAGING_PREFIX, Staging, check_free_space

from .conftest import snapshot

NAME = "bert_tiny_onnx_cpu"


def test_refuses_an_occupied_name_without_force(tmp_path: Path) -> None:
    (tmp_path / NAME / "1").mkdir(parents=True)
    (tmp_path / NAME / "config.pbtxt").write_text('name: "mine"\n')
    before = snapshot(tmp_path)
    with pytest.raises(BuildError, match=f"already holds {NAME}: pass --force"):
        build_preset("tiny", tmp_path)
    assert snapshot(tmp_path) == before


def test_force_replaces_the_whole_model_folder(tmp_path: Path) -> None:
    (tmp_path / NAME / "2").mkdir(parents=True)
    (tmp_path / NAME / "2" / "stale.onnx").write_bytes(b"old")
    (tmp_path / "other_model").mkdir()
    build_preset("tiny", tmp_path, force=True)
    assert not (tmp_path / NAME / "2").exists()  # no half-old, half-new model
    assert (tmp_path / NAME / "1" / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME, f"{NAME}_qa", "other_model"]


def test_disk_full_midway_leaves_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertserve.builder import workflow as builder

    repo = tmp_path / "repo"
    build_preset("tiny", repo)
    before = snapshot(repo)

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(builder.shutil, "copyfile", full)
    with pytest.raises(BuildError, match="No space left on the device holding"):
        build_preset("tiny", repo, force=True)
    assert snapshot(repo) == before
    assert not any(p.name.startswith(STAGING_PREFIX) for p in repo.iterdir())


def test_failure_in_a_new_repository_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertserve.builder import workflow as builder

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(builder.shutil, "copyfile", crash)
    with pytest.raises(BuildError, match="writing the fp32 ONNX model failed .*exploded"):
        build_preset("tiny", tmp_path / "new" / "repo")
    assert not (tmp_path / "new").exists()


def test_free_space_is_checked_before_starting(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="needs about .* GB free near"):
        check_free_space(tmp_path / "repo", 10**18)


def test_output_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(BuildError, match="is a file"):
        Staging(target, [NAME], force=False)

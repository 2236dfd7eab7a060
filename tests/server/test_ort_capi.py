"""The C-API session that STRING models run through, on its own: raw bytes both ways, empty
string tensors, and ONNX Runtime's own errors turned into the server's (a model file it cannot
read, a request it cannot run, a CUDA provider this onnxruntime build lacks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bertserve.backends.ort_capi import StringSession
from bertserve.errors import ConfigError, InternalError
from tests.triton_models import add_sub, identity


def _session(folder: Path, gpu_id: int | None = None) -> StringSession:
    return StringSession(folder / "1" / "model.onnx", 1, 1, "0", gpu_id)


def test_raw_bytes_and_empty_tensors(tmp_path: Path) -> None:
    session = _session(identity(tmp_path, "s", "BYTES", [-1]))
    try:
        values = np.array([[b"\x00\xff", b"", "é".encode()]], dtype=np.object_)
        out = session.run({"INPUT0": values}, ["OUTPUT0"])["OUTPUT0"]
        assert out.shape == (1, 3) and out.tolist() == values.tolist()
        empty = session.run({"INPUT0": np.empty((1, 0), dtype=np.object_)}, ["OUTPUT0"])
        assert empty["OUTPUT0"].shape == (1, 0)
    finally:
        session.close()
        session.close()  # a second close is harmless


def test_numbers_beside_strings(tmp_path: Path) -> None:
    session = _session(add_sub(tmp_path, "m", "BYTES", ("INT32", "BYTES"), [2]))
    try:
        values = np.array([[b"3", b"4"]], dtype=np.object_)
        out = session.run({"INPUT0": values, "INPUT1": values}, ["OUTPUT0", "OUTPUT1"])
        assert out["OUTPUT0"].tolist() == [[6, 8]] and out["OUTPUT1"].tolist() == [[b"0", b"0"]]
        with pytest.raises(InternalError, match="no ONNX element type"):
            session.run({"INPUT0": np.zeros((1, 2), dtype=np.complex64)}, ["OUTPUT0"])
    finally:
        session.close()


def test_onnxruntime_errors_become_the_servers(tmp_path: Path) -> None:
    folder = identity(tmp_path, "s", "BYTES", [2])
    session = _session(folder)
    try:
        wrong_rank = np.array([b"a", b"b"], dtype=np.object_)
        with pytest.raises(InternalError, match="INPUT0"):
            session.run({"INPUT0": wrong_rank}, ["OUTPUT0"])
    finally:
        session.close()
    (folder / "1" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="onnxruntime could not load model.onnx"):
        _session(folder)


def test_a_gpu_instance_needs_a_cuda_build(tmp_path: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(ConfigError, match="onnxruntime could not load model.onnx|CUDA"):
        _session(identity(tmp_path, "s", "BYTES", [2]), gpu_id=0)

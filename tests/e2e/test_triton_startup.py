"""`bertserve serve` starting as tritonserver does: a model that fails to load stops start-up
(`--exit-on-error`, on by default) with the error on a Triton-layout `E` line that scripts grep
for; `--exit-on-error=false` serves the others; the deprecated flag warns in Triton's words."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import start_server
from tests.triton_models import identity

pytestmark = pytest.mark.e2e

_BAD = (
    'platform: "onnxruntime_onnx"\nmax_batch_size: -1\n'
    'input { name: "INPUT0" data_type: TYPE_FP32 dims: [-1] }\n'
    'output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [-1] }\n'
)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    identity(repo, "good", "FP32", [-1])
    (repo / "bad").mkdir()  # no version folder: the config is checked first
    (repo / "bad" / "config.pbtxt").write_text(_BAD)
    return repo


def _serve(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bertserve", "serve", "--http-port", "0", "--grpc-port", "0",
         "--metrics-port", "0", *flags],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_failing_model_stops_start_up_with_an_error_line(tmp_path: Path) -> None:
    done = _serve("--model-repository", str(_repo(tmp_path)), "--strict-model-config=true")
    assert done.returncode != 0
    log = done.stdout + done.stderr
    expected = "'max_batch_size' must be non-negative value for bad"
    assert re.search(r"^E\d{4} .*" + re.escape(expected), log, re.MULTILINE), log
    assert (
        "Warning: '--strict-model-config' has been deprecated! Please use "
        "'--disable-auto-complete-config' instead." in log
    )
    assert "bertserve ready" not in log


def test_exit_on_error_false_serves_the_others(tmp_path: Path) -> None:
    with start_server(_repo(tmp_path), extra=["--exit-on-error=false"]) as server:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(server.http_url)
        assert client.is_model_ready("good")
        assert not client.is_model_ready("bad")

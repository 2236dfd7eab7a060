"""Shared fixtures: model repositories built by bertserve itself and a real server process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bertserve.announce import READY_LINE, parse_started
from bertserve.perf.analyzer import ENV_VAR, find_perf_analyzer

TINY = "bert_tiny_onnx_cpu"

#: Skips a test that runs Triton's real perf_analyzer where none is installed.
needs_perf_analyzer = pytest.mark.skipif(
    find_perf_analyzer() is None,
    reason=f"perf_analyzer not installed (scripts/install_perf_analyzer.sh, or set {ENV_VAR})",
)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding the `tiny` preset, as `bertserve build --preset tiny` writes it."""
    from bertserve.builder import build_preset

    repo = tmp_path_factory.mktemp("tiny_repo")
    build_preset("tiny", repo, force=True)
    return repo


@pytest.fixture(scope="session")
def tiny_model_file(tiny_repo: Path) -> Path:
    return tiny_repo / TINY / "1" / "model.onnx"


@dataclass
class ServerProcess:
    """A `bertserve serve` child process on free ports."""

    proc: subprocess.Popen[str]
    ports: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            if self.pump is not None:
                self.pump.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def start_server(
    *repos: Path, extra: list[str] | None = None, timeout: float = 90, wait_ready: bool = True
) -> ServerProcess:
    args = [sys.executable, "-m", "bertserve", "serve"]
    for repo in repos:
        args += ["--model-repository", str(repo)]
    args += ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", *(extra or [])]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    server = ServerProcess(proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server.lines.append(line)
            started = parse_started(line)
            if started is not None:
                server.ports[started[0]] = started[2]
            if READY_LINE in line or (not wait_ready and "HTTPService" in line):
                ready.set()
        ready.set()

    server.pump = threading.Thread(target=pump, daemon=True)
    server.pump.start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            proc.kill()
            server.stop()
            raise RuntimeError("server did not start in time:\n" + server.output())
    if proc.poll() is not None and wait_ready:
        server.stop()
        raise RuntimeError("server exited at start:\n" + server.output())
    return server


@pytest.fixture(scope="session")
def server(tiny_repo: Path) -> Iterator[ServerProcess]:
    """One server over the tiny repository for the whole session (read-only tests)."""
    srv = start_server(tiny_repo)
    yield srv
    srv.stop()


def copy_model(src_repo: Path, name: str, dst_repo: Path, new_name: str, config: str) -> Path:
    """Copy a built model under another name with another config.pbtxt (test repositories)."""
    dst = dst_repo / new_name
    shutil.copytree(src_repo / name / "1", dst / "1")
    (dst / "config.pbtxt").write_text(config)
    return dst

"""Shared fixtures: model repositories built by bertserve itself and a real server process."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bertserve.launch import ServerProcess
from bertserve.perf.analyzer import ENV_VAR, find_perf_analyzer

TINY = "bert_tiny_onnx_cpu"
ROOT = Path(__file__).resolve().parents[1]


def find_tool(name: str, env_var: str) -> str | None:
    """A program the tests drive (promtool, chromium): $ENV_VAR, then this checkout's
    .tools/NAME (where scripts/install puts what it unpacks), then PATH."""
    candidates = [os.environ.get(env_var), str(ROOT / ".tools" / name), shutil.which(name)]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


#: Skips a test that runs Triton's real perf_analyzer where none is installed.
needs_perf_analyzer = pytest.mark.skipif(
    find_perf_analyzer() is None,
    reason=f"perf_analyzer not installed (scripts/install_perf_analyzer.sh, or set {ENV_VAR})",
)


@pytest.fixture(autouse=True)
def _tokenizer_pool_setting() -> Iterator[None]:
    """TOKENIZERS_PARALLELISM as it was before each test: loading a pipeline of many
    instances sets it for the process (qa_pipeline.choose_tokenizer_pool), which must not
    reach the tests after it."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    yield
    if before is None:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)
    else:
        os.environ["TOKENIZERS_PARALLELISM"] = before


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


def start_server(
    *repos: Path, extra: list[str] | None = None, timeout: float = 90
) -> ServerProcess:
    """A started `bertserve serve` over `repos` on free ports (`extra`: more serve flags)."""
    return ServerProcess(*repos, args=extra or (), ready_timeout=timeout).start()


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

"""docs/triton-compat.md stays true: every tritonserver flag is listed with the status the
command line gives it, every gRPC method with what the server implements, every extension with
what `/v2` lists, every metric marked works is exported."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from tritonclient.grpc import service_pb2 as pb

from bertserve.commands import triton_flags
from bertserve.endpoints.grpc import GrpcService
from bertserve.server import Server
from tests.frontends.conftest import url
from tests.frontends.protocols import Client
from tests.server.test_triton_flags import _serve_flags

DOC = Path(__file__).resolve().parents[2] / "docs" / "triton-compat.md"
STATUSES = ("works", "differs", "not planned")


def _sections() -> dict[str, list[tuple[str, str]]]:
    """Each `## ` section's table rows as (first cell, status)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif line.startswith("| ") and current:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) >= 2 and cells[1] in STATUSES:
                sections[current].append((cells[0], cells[1]))
    return sections


def _section(prefix: str) -> list[tuple[str, str]]:
    return next(rows for name, rows in _sections().items() if name.startswith(prefix))


def _codes(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_every_row_has_a_status() -> None:
    for name, rows in _sections().items():
        for item, status in rows:
            assert status in STATUSES, (name, item)


def test_flags_have_the_status_the_command_line_gives_them() -> None:
    rows = {_codes(item)[0]: status for item, status in _section("tritonserver flags")}
    assert sorted(rows) == sorted(triton_flags.TRITONSERVER_FLAGS)
    ignored = {f.flag for f in triton_flags.IGNORED}
    refused = {f.flag for f in triton_flags.REFUSED}
    for flag, status in rows.items():
        if flag in refused:
            assert status == "not planned", flag
        elif flag in ignored:
            assert status == "differs", flag
        else:
            assert status in ("works", "differs"), flag


def test_serve_flags_beyond_tritonservers_are_listed_as_bertserve_s_own() -> None:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("bertserve's own flags:")
    own = set(_codes(text[start : text.index("\n\n", start)]))
    extra = {f for f in _serve_flags() if f.startswith("--")} - set(triton_flags.TRITONSERVER_FLAGS)
    assert own == extra - {"--help"}


def test_grpc_methods_are_listed_as_the_server_implements_them(served: Server) -> None:
    text = DOC.read_text(encoding="utf-8")
    implemented = set(GrpcService(served.engine, served.settings).method_handlers())
    rows = _section("Endpoints")
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in (m.name for m in service.methods):
        status = next(
            (s for item, s in rows if f"`{method}`" in item),
            None,
        )
        assert status is not None, f"{method} is not in docs/triton-compat.md"
        assert (status != "not planned") == (method in implemented), method
    assert "TraceSetting" in text


def test_extensions_are_the_ones_v2_lists(client: Client) -> None:
    listed = set(client.server_metadata().extensions)
    for item, status in _section("Protocol extensions"):
        (name,) = _codes(item)
        if name == "cuda_shared_memory":
            continue  # listed only where a CUDA GPU is visible
        assert (name in listed) == (status != "not planned"), name


def test_metrics_marked_works_are_exported(served: Server, client: Client) -> None:
    client.infer("tiny", client.inputs({k: v for k, v in _feed().items()}))
    address = url(served, "metrics")
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    for item, status in _section("Metrics"):
        if status != "works":
            continue
        for name in _codes(item):
            assert re.search(rf"^{name}[{{ ]", scraped, re.MULTILINE), name


def _feed() -> dict:
    from tests.frontends.protocols import feed

    return feed()


@pytest.mark.parametrize("path", ["docs/triton-compat.md"])
def test_linked_from_the_readme(path: str) -> None:
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    assert path in readme

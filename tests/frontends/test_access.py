"""What can be protected, over HTTP and gRPC: groups of endpoints behind a header
(tritonserver's --http-restricted-api / --grpc-restricted-protocol), TLS and mutual TLS on
both services, and no state change from a request a web page could send."""

from __future__ import annotations

import contextlib
import queue
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from bertserve.endpoints.grpc import API_GROUP as GRPC_GROUP
from bertserve.endpoints.grpc import GrpcService
from bertserve.endpoints.http import API_GROUP as HTTP_GROUP
from bertserve.endpoints.http import ROUTES
from bertserve.server import Server
from bertserve.settings import API_GROUPS, Restriction, ServerSettings, TlsFiles
from tests.conftest import TINY, copy_model
from tests.frontends.conftest import BATCH2, running, settings, url
from tests.frontends.messages import post
from tests.frontends.protocols import PROTOCOLS, SYNC, Client, feed, inputs

ADMIN = Restriction(frozenset({"model-repository", "statistics"}), "admin-key", "s3cret")
INFER = Restriction(frozenset({"inference"}), "infer-key", "k")


def test_every_endpoint_belongs_to_one_of_tritons_groups() -> None:
    assert {handler for _, _, handler in ROUTES} == set(HTTP_GROUP)
    methods = GrpcService(None, ServerSettings()).method_handlers()  # type: ignore[arg-type]
    assert set(methods) == set(GRPC_GROUP)
    assert set(HTTP_GROUP.values()) | set(GRPC_GROUP.values()) <= set(API_GROUPS)


@pytest.fixture(scope="module")
def restricted(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("restricted") / "repo"
    copy_model(tiny_repo, TINY, repo, "m", BATCH2)
    rules = [ADMIN, INFER]
    config = settings(repo, model_control_mode="explicit", load_models=["m"],
                      http_restricted_apis=rules, grpc_restricted_protocols=rules)  # fmt: skip
    with running(config) as server:
        yield server


def _header(protocol: str, rule: Restriction, value: str) -> dict[str, str]:
    prefix = "triton-grpc-protocol-" if protocol == "grpc" else ""
    return {prefix + rule.key: value}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_restricted_group_needs_its_header(restricted: Server, protocol: str) -> None:
    with Client(protocol, url(restricted, protocol)) as client:
        assert client.is_server_live() and client.is_model_ready("m")  # health: open
        expected = (
            "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
            if protocol == "grpc"
            else "This API is restricted, expecting header 'admin-key'"
        )
        for value in (None, "wrong", "s3cre", "s3cret "):
            headers = None if value is None else _header(protocol, ADMIN, value)
            for call in (
                lambda h: client.unload_model("m", headers=h),
                lambda h: client.get_inference_statistics("m", headers=h),
                lambda h: client.get_model_repository_index(headers=h),
            ):
                with pytest.raises(InferenceServerException) as info:
                    call(headers)
                assert info.value.message() == expected
                assert info.value.status() == client.status(http=403, grpc="UNAVAILABLE")
        assert client.is_model_ready("m")  # nothing was unloaded
        with pytest.raises(InferenceServerException, match="expecting header '.*infer-key'"):
            client.infer("m", client.inputs(feed()))
        good = _header(protocol, INFER, "k")
        assert client.infer("m", client.inputs(feed()), headers=good).as_numpy("start_logits").size
        admin = _header(protocol, ADMIN, "s3cret")
        client.get_inference_statistics("m", headers=admin)
        client.unload_model("m", headers=admin)
        client.load_model("m", headers=admin)
        assert client.is_model_ready("m")


def test_a_restricted_stream_needs_its_header(restricted: Server) -> None:
    for headers in (None, _header("grpc", INFER, "k")):
        replies: queue.Queue[tuple[Any, Any]] = queue.Queue()

        def reply(result: Any, error: Any, replies: queue.Queue[tuple[Any, Any]] = replies) -> None:
            replies.put((result, error))

        with Client("grpc", url(restricted, "grpc")) as client:
            client.start_stream(callback=reply, headers=headers)
            with contextlib.suppress(InferenceServerException):  # the stream may be gone
                client.async_stream_infer("m", client.inputs(feed()), request_id="s")
            result, error = replies.get(timeout=30)
            client.stop_stream()
        if headers is None:
            assert "expecting header 'triton-grpc-protocol-infer-key'" in str(error)
        else:
            assert error is None and result.get_response().id == "s"


def test_restricting_health_covers_the_grpc_health_service(tiny_repo: Path, tmp_path: Path) -> None:
    rule = Restriction(frozenset({"health"}), "probe", "p")
    with (
        running(settings(tmp_path, grpc_restricted_protocols=[rule])) as server,
        grpc.insecure_channel(url(server, "grpc")) as channel,
    ):
        check = health_pb2_grpc.HealthStub(channel).Check
        with pytest.raises(grpc.RpcError) as info:
            check(health_pb2.HealthCheckRequest(), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "expecting header 'triton-grpc-protocol-probe'" in str(info.value.details())
        answer = check(health_pb2.HealthCheckRequest(), timeout=30,
                       metadata=[("triton-grpc-protocol-probe", "p")])  # fmt: skip
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


# -- requests a web page can send ------------------------------------------------------------


@pytest.fixture()
def explicit(tiny_repo: Path, tmp_path: Path) -> Iterator[Server]:
    copy_model(tiny_repo, TINY, tmp_path / "repo", "m", BATCH2)
    config = settings(tmp_path / "repo", model_control_mode="explicit", load_models=["m"])
    with running(config) as server:
        yield server


BROWSER = [  # (headers, text in the refusal)
    ({"Content-Type": "text/plain"}, "Content-Type text/plain"),
    ({"Content-Type": "Text/Plain; charset=utf-8"}, "Content-Type text/plain"),
    (
        {"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site"},
        "application/x-www-form-urlencoded",
    ),
    (
        {"Content-Type": "application/x-www-form-urlencoded", "Referer": "https://evil.example/"},
        "application/x-www-form-urlencoded",
    ),
    ({"Content-Type": "multipart/form-data; boundary=x"}, "multipart/form-data"),
    ({"Origin": "https://evil.example"}, "from origin https://evil.example"),
    ({"Origin": "null"}, "from origin null"),
]


@pytest.mark.parametrize(("headers", "reason"), BROWSER, ids=[r for _, r in BROWSER])
def test_a_request_a_web_page_could_send_changes_nothing(
    explicit: Server, headers: dict[str, str], reason: str
) -> None:
    address = url(explicit, "http")
    paths = [f"/v2/repository/models/m/{action}" for action in ("unload", "load")] + [
        f"/v2/{kind}sharedmemory/{where}"
        for kind in ("system", "cuda")
        for where in ("region/r/register", "region/r/unregister", "unregister")
    ]
    for path in paths:
        code, payload, _ = post(address, path, b"{}", headers)
        assert code == 403, (path, payload)
        error = orjson.loads(payload)["error"]
        assert reason in error and "Content-Type: application/json" in error
    with Client("http", address) as client:
        assert client.is_model_ready("m")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": "application/json"},
        {"Origin": "http://{host}"},
        # what curl sends with a body, as Triton's C++ client and perf_analyzer do
        {"Content-Type": "application/x-www-form-urlencoded"},
    ],
    ids=["no content type", "json", "same origin", "curl's form type, no browser marks"],
)
def test_clients_that_are_not_web_pages_change_state_as_before(
    explicit: Server, headers: dict[str, str]
) -> None:
    address = url(explicit, "http")
    headers = {k: v.format(host=address) for k, v in headers.items()}
    for action in ("unload", "load"):
        code, payload, _ = post(address, f"/v2/repository/models/m/{action}", b"", headers)
        assert code == 200, payload
    code, _, _ = post(address, "/v2/models/m/infer", b"{}", {"Content-Type": "text/plain"})
    assert code == 400  # inference changes nothing: only the body is wrong here


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA, the server's certificate for 127.0.0.1 and a client's, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    files = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key", "ccert", "ckey")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server, client = ca.issue_cert("127.0.0.1", "localhost"), ca.issue_cert("client.example")
    for blob in server.cert_chain_pems:
        blob.write_to_path(str(files["cert"]), append=True)
    server.private_key_pem.write_to_path(str(files["key"]))
    client.cert_chain_pems[0].write_to_path(str(files["ccert"]))
    client.private_key_pem.write_to_path(str(files["ckey"]))
    return files


def _tls_client(protocol: str, address: str, pki: dict[str, Path], with_cert: bool) -> Any:
    if protocol == "http":
        options: dict[str, str] = {"ca_certs": str(pki["ca"])}
        if with_cert:
            options |= {"certfile": str(pki["ccert"]), "keyfile": str(pki["ckey"])}
        return SYNC["http"].InferenceServerClient(address, ssl=True, ssl_options=options)
    cert = {"private_key": str(pki["ckey"]), "certificate_chain": str(pki["ccert"])}
    return SYNC["grpc"].InferenceServerClient(
        address, ssl=True, root_certificates=str(pki["ca"]), **(cert if with_cert else {})
    )


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual tls"])
def test_both_services_serve_tls(
    tiny_repo: Path, tmp_path: Path, pki: dict[str, Path], mutual: bool
) -> None:
    copy_model(tiny_repo, TINY, tmp_path / "repo", "m", BATCH2)
    tls = TlsFiles(pki["cert"], pki["key"], pki["ca"] if mutual else None, mutual)
    with running(settings(tmp_path / "repo", http_tls=tls, grpc_tls=tls)) as server:
        for protocol in PROTOCOLS:
            address = url(server, protocol)
            secure = _tls_client(protocol, address, pki, with_cert=mutual)
            try:
                result = secure.infer("m", inputs(SYNC[protocol], feed()))
                assert result.as_numpy("start_logits").shape == (1, 16)
            finally:
                secure.close()
            with Client(protocol, address) as plain, pytest.raises(Exception):  # noqa: B017
                plain.is_server_live()  # no TLS, no answer
            if mutual:  # TLS without a client certificate: refused in the handshake
                anonymous = _tls_client(protocol, address, pki, with_cert=False)
                try:
                    with pytest.raises(Exception):  # noqa: B017
                        anonymous.is_server_live()
                finally:
                    anonymous.close()


async def test_unreadable_tls_files_end_the_start_naming_the_flag(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    missing = tmp_path / "nope.pem"
    for service in ("http", "grpc"):
        server = Server(settings(tmp_path, **{f"{service}_tls": TlsFiles(pki["cert"], missing)}))
        with pytest.raises(SystemExit, match=f"cannot read --{service}-server-key {missing}"):
            await server.start()
        for port in server.ports.values():  # nothing was left listening
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) != 0


async def test_a_certificate_that_is_not_one_ends_the_start(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    server = Server(settings(tmp_path, http_tls=TlsFiles(tmp_path / "bad.pem", pki["key"])))
    with pytest.raises(SystemExit, match="cannot serve HTTPS with --http-server-cert/-key"):
        await server.start()

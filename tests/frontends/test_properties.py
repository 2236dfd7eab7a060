"""Properties of both front ends under any input a client can send (hypothesis): no 5xx, no
hang, and memory bounded by the bytes accepted. Requests go over the wire to the shared
in-process server (its body and message limits are 1 MiB), at the model built with its
tables' sizes ('tiny') and at names that are no model.

Bounded: a fixed number of examples per property and a timeout on every request; under
CI=true the examples are derandomized (the same ones every run), locally they are new each
run. RSS is sampled on a thread while the properties run."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import threading
import warnings
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from bertserve.errors import InvalidInput
from bertserve.protocol import grpc_codec, http_codec
from bertserve.server import Server
from bertserve.tensors import DATATYPES, datatype_to_numpy, serialize_bytes
from tests.frontends.conftest import MAX_HTTP_BODY, url
from tests.frontends.protocols import INPUTS

#: Examples per property over the wire, and for the codecs alone (in-process, cheap).
WIRE_EXAMPLES = 300
CODEC_EXAMPLES = 500
#: The most the server's resident memory may grow while the properties run: every body is
#: at most 1 MiB, so anything near this is allocation by claim (2.3 GB before the fix).
RSS_GROWTH_LIMIT = 256 * 2**20

CI = bool(os.environ.get("CI"))
PROPERTY = settings(
    max_examples=WIRE_EXAMPLES,
    deadline=None,  # the machine is shared: time is bounded by each request's timeout
    derandomize=CI,
    database=None if CI else settings.default.database,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- what a client may send ------------------------------------------------------------------

# The tiny model as built (its tables' sizes recorded; a model without them is guarded by the
# safety net, test_isolation.py, and may answer a bad id with its runtime's 500), and names
# that are no model.
MODELS = st.sampled_from(["tiny", "tiny", "tiny", "tiny", "nope", ""])
NAMES = st.one_of(st.sampled_from(INPUTS), st.text(max_size=12))
TYPES = st.one_of(st.sampled_from(sorted(DATATYPES)), st.sampled_from(["INT64"] * 4),
                  st.text(max_size=6))  # fmt: skip
DIM = st.one_of(
    st.integers(0, 20),
    st.integers(-3, 600),
    st.sampled_from([2**31, 2**62, 2**63 - 1, 10**12]),
)
SHAPES = st.lists(DIM, max_size=4)
VALUES = st.one_of(st.integers(-3, 1100), st.integers(-(2**64), 2**64), st.floats(),
                   st.booleans(), st.text(max_size=4))  # fmt: skip
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),  # fmt: skip
    max_leaves=12,
)


Tensor = tuple[str, str, Any, list[Any]]  # name, datatype, shape, values


@st.composite
def near_valid(draw: st.DrawFn) -> list[Tensor]:
    """The three inputs the tiny model takes, right but for a mutation or two: an id out of
    the vocabulary, a token type of 2, a length past the positions, shapes that disagree,
    another datatype, an input missing or extra, a batch of 0 or past max_batch_size."""
    batch = draw(st.integers(1, 8))
    seq = draw(st.one_of(st.integers(0, 24), st.sampled_from([511, 512, 513])))
    if seq > 24:
        batch = 1
    size = batch * seq
    ids = draw(st.lists(st.integers(0, 1023), min_size=size, max_size=size)) if size <= 64 \
        else [draw(st.integers(0, 1023))] * size  # fmt: skip
    tensors: list[Tensor] = [
        ("input_ids", "INT64", [batch, seq], ids),
        ("attention_mask", "INT64", [batch, seq], [1] * size),
        ("token_type_ids", "INT64", [batch, seq], [i % 2 for i in range(size)]),
    ]
    for _ in range(draw(st.integers(0, 2))):
        which = draw(st.integers(0, len(tensors) - 1))
        name, datatype, shape, values = tensors[which]
        mutation = draw(st.sampled_from(
            ["value", "value", "datatype", "shape", "drop", "extra", "batch"]))  # fmt: skip
        if mutation == "value" and values:
            values = list(values)
            values[draw(st.integers(0, len(values) - 1))] = draw(st.integers(-3, 2**40))
        elif mutation == "datatype":
            datatype = draw(st.sampled_from(sorted(DATATYPES)))
        elif mutation == "shape":
            shape = draw(SHAPES)
        elif mutation == "batch":
            shape = [draw(st.sampled_from([0, 9, 64])), seq]
        elif mutation == "drop":
            del tensors[which]
            continue
        else:
            tensors.append((draw(NAMES), "INT64", shape, values))
        tensors[which] = (name, datatype, shape, values)
    return tensors


@st.composite
def chaos(draw: st.DrawFn) -> list[Tensor]:
    """Inputs described any which way."""
    return [
        (
            draw(NAMES),
            draw(TYPES),
            draw(st.one_of(SHAPES, JSON)),
            draw(st.lists(VALUES, max_size=16)),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]


INPUT_LISTS = st.one_of(near_valid(), near_valid(), near_valid(), chaos())


def _packed(datatype: str, values: list[Any]) -> bytes | None:
    """The values as the binary extension carries them, where they fit the datatype."""
    try:
        if datatype == "BYTES":
            return serialize_bytes(np.array([str(v).encode() for v in values], dtype=object))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a value that overflows the type: none
            return np.array(values, dtype=datatype_to_numpy(datatype)).tobytes()
    except (InvalidInput, ValueError, TypeError, OverflowError, RuntimeWarning):
        return None


#: True one time in ten: how often a request-level field is wrong, so that most requests get
#: past the codec to the checks and the model behind it.
RARELY = st.sampled_from([False] * 9 + [True])


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of an infer request: JSON or JSON plus binary tensors, any of
    its fields wrong, maybe compressed, maybe with a wrong header length."""
    model = draw(MODELS)
    inputs: list[Any] = []
    binary = b""
    for name, datatype, shape, values in draw(INPUT_LISTS):
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        packed = _packed(datatype, values)
        if draw(st.booleans()):
            chunk = draw(st.binary(max_size=256)) if packed is None or draw(RARELY) else packed
            size = draw(st.integers(-2, 300)) if draw(RARELY) else len(chunk)
            entry["parameters"] = {"binary_data_size": size}
            binary += chunk
        else:
            entry["data"] = values
        inputs.append(entry)
    doc: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        doc["outputs"] = draw(st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["start_logits", "end_logits", "x"])},
            optional={"parameters": JSON}), max_size=3))  # fmt: skip
    if draw(RARELY):
        doc["parameters"] = draw(JSON)
    # the standard library writes what orjson won't (integers past 64 bits, NaN): the server
    # must refuse those too
    header = json.dumps(draw(JSON) if draw(RARELY) else doc).encode()
    body = header + binary
    headers: dict[str, str] = {}
    if binary or draw(RARELY):
        headers["Inference-Header-Content-Length"] = (
            draw(HEADER_TEXT) if draw(RARELY) else str(len(header))
        )
    if draw(RARELY):
        encoding = draw(st.sampled_from(["gzip", "deflate", "br"]))
        headers["Content-Encoding"] = encoding
        compress = {"gzip": gzip.compress, "deflate": zlib.compress}.get(encoding)
        if compress is not None and not draw(RARELY):
            body = compress(body)
    if draw(RARELY):
        body = draw(st.binary(max_size=512))  # not even JSON
    return f"/v2/models/{model}/infer", body, headers


_CONTENTS = {"INT64": "int64_contents", "INT32": "int_contents", "FP32": "fp32_contents",
             "BOOL": "bool_contents", "UINT64": "uint64_contents"}  # fmt: skip


@st.composite
def grpc_requests(draw: st.DrawFn) -> bytes:
    """A serialized ModelInferRequest with any of its fields wrong: typed contents or raw
    bytes per input, or bytes that are no message at all."""
    if draw(RARELY):
        return draw(st.binary(max_size=512))
    request = pb.ModelInferRequest(model_name=draw(MODELS), id=draw(st.text(max_size=8)))
    raw = draw(st.booleans())
    for name, datatype, shape, values in draw(INPUT_LISTS):
        dims = [d for d in shape if type(d) is int and -(2**63) <= d < 2**63] \
            if isinstance(shape, list) else []  # fmt: skip
        tensor = request.inputs.add(name=name, datatype=datatype, shape=dims)
        packed = _packed(datatype, values)
        if raw:
            use = packed is not None and not draw(RARELY)
            request.raw_input_contents.append(packed if use else draw(st.binary(max_size=256)))
        else:
            field = _CONTENTS.get(datatype, "int64_contents")
            with contextlib.suppress(ValueError, TypeError, OverflowError):  # what won't fit
                getattr(tensor.contents, field).extend(
                    [v for v in values if type(v) is int or field == "fp32_contents"]
                )
    if draw(st.booleans()):
        request.outputs.add(name=draw(st.sampled_from(["start_logits", "x", ""])))
    if draw(RARELY):
        request.parameters["timeout"].int64_param = draw(st.integers(-5, 10**12))
    return bytes(request.SerializeToString())


# -- the properties --------------------------------------------------------------------------


class PeakRss:
    """The process's resident memory, sampled every 5 ms on a thread of its own."""

    def __init__(self) -> None:
        self.start = self.peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def _now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._now())

    def growth(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


@pytest.fixture()
def rss() -> Iterator[PeakRss]:
    peak = PeakRss()
    yield peak
    grew = peak.growth()
    print(f"resident memory: {peak.start / 2**20:.0f} MiB, grew by {grew / 2**20:.1f} MiB")
    assert grew < RSS_GROWTH_LIMIT, f"resident memory grew by {grew / 2**20:.0f} MiB"


#: What a client's mistakes may be answered with: never a 5xx, but for the 503 of a request
#: that asked for a timeout (parameters.timeout) and waited that long.
HTTP_OK = {200, 400, 404, 405, 413}
GRPC_OK = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED"}
TIMED_OUT = "timed out in the queue"


def test_http_answers_any_request_without_a_5xx(served: Server, rss: PeakRss) -> None:
    host, port = url(served, "http").split(":")

    @PROPERTY
    @given(http_requests())
    def answers(request: tuple[str, bytes, dict[str, str]]) -> None:
        path, body, headers = request
        conn = http.client.HTTPConnection(host, int(port), timeout=30)  # no hang
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        timed_out = response.status == 503 and TIMED_OUT in payload.decode()
        assert response.status in HTTP_OK or timed_out, (response.status, payload[:300])
        if response.status != 200:
            assert isinstance(orjson.loads(payload)["error"], str)

    answers()
    assert len(served.engine.models) >= 6 and served.engine.ready  # and it still serves


def test_grpc_answers_any_request_without_an_internal_error(served: Server, rss: PeakRss) -> None:
    with grpc.insecure_channel(url(served, "grpc")) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        @PROPERTY
        @given(grpc_requests())
        def answers(request: bytes) -> None:
            try:
                call(request, timeout=30)  # no hang
                code = "OK"
            except grpc.RpcError as exc:
                code, details = exc.code().name, str(exc.details())
                timed_out = code == "DEADLINE_EXCEEDED" and TIMED_OUT in details
                assert code in GRPC_OK or timed_out, (code, details)

        answers()
    assert served.engine.ready


@settings(max_examples=CODEC_EXAMPLES, deadline=None, derandomize=CI,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(http_requests())
def test_the_http_codec_refuses_only_with_invalid_input(
    request: tuple[str, bytes, dict[str, str]],
) -> None:
    _, body, headers = request
    length = headers.get("Inference-Header-Content-Length")
    header_length = int(length) if length is not None and length.isdigit() else None
    with contextlib.suppress(InvalidInput):
        http_codec.decode_request(body, header_length, "m", "")


@settings(max_examples=CODEC_EXAMPLES, deadline=None, derandomize=CI,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(grpc_requests())
def test_the_grpc_codec_refuses_only_with_invalid_input(request: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        grpc_codec.decode_request(request)


def test_bodies_at_the_limit_are_answered(served: Server, rss: PeakRss) -> None:
    """The largest bodies the server takes, in the shapes that cost the most to decode: many
    JSON numbers, many BYTES strings, deep nesting; each answered, memory bounded."""
    count = MAX_HTTP_BODY // 3
    bodies = [
        orjson.dumps({"inputs": [{"name": "input_ids", "datatype": "INT64",
                                  "shape": [1, count], "data": [1] * count}]}),
        orjson.dumps({"inputs": [{"name": "input_ids", "datatype": "BYTES",
                                  "shape": [count // 3], "data": ["a"] * (count // 3)}]}),
        b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ]  # fmt: skip
    host, port = url(served, "http").split(":")
    for body in bodies:
        assert len(body) <= MAX_HTTP_BODY
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request("POST", "/v2/models/tiny/infer", body=body)
            assert conn.getresponse().status == 400
        finally:
            conn.close()

"""What one request may cost the server: its memory is bounded by the bytes it carried (a
compressed body by what it decompresses to, a tensor by its data rather than the shape it
claims), and what it claims but cannot carry is a 4xx naming the input, over HTTP and gRPC."""

from __future__ import annotations

import gzip
import re
import zlib

import grpc
import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb

from bertserve.errors import InvalidInput
from bertserve.protocol.http_codec import decode_request
from bertserve.server import Server
from tests.frontends.conftest import MAX_GRPC_MESSAGE, MAX_HTTP_BODY, url
from tests.frontends.messages import good, grpc_infer, grpc_request, json_body, post
from tests.frontends.protocols import Client, feed

INFER = "/v2/models/tiny/infer"

# -- compressed bodies ------------------------------------------------------------------------

ZEROS = 16 * MAX_HTTP_BODY  # decompresses to 16 times the limit


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
)
def test_a_compressed_body_is_bounded_by_what_it_decompresses_to(
    served: Server, http: Client, encoding: str, compress
) -> None:
    bomb = compress(b" " * ZEROS)
    assert len(bomb) < MAX_HTTP_BODY // 8
    code, payload, _ = post(url(served, "http"), INFER, bomb, {"Content-Encoding": encoding})
    assert code == 413, payload
    error = orjson.loads(payload)["error"]
    assert f"{encoding} body decompresses to more than the limit of {MAX_HTTP_BODY}" in error
    assert "--http-max-input-size" in error
    assert http.infer("tiny", http.inputs(feed())).as_numpy("start_logits").shape == (1, 16)


def test_a_compressed_body_within_the_limit_is_served(served: Server) -> None:
    body = json_body(good(values=[1, 1, 0, 0]))
    for encoding, compress in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        code, payload, _ = post(url(served, "http"), INFER, compress(body), {
            "Content-Encoding": encoding})  # fmt: skip
        assert code == 200, payload
    truncated = gzip.compress(body)[:-12]
    code, payload, _ = post(url(served, "http"), INFER, truncated, {"Content-Encoding": "gzip"})
    assert code == 400 and "not valid gzip data: it ends early" in orjson.loads(payload)["error"]


def test_a_compressed_grpc_message_is_bounded_by_what_it_decompresses_to(served: Server) -> None:
    """grpc checks a compressed message's size after decompression (its backstop, twice
    --grpc-max-message-size), so nothing above it is ever held."""
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input_ids", datatype="INT64", shape=[1, 2 * MAX_GRPC_MESSAGE])
    request.raw_input_contents.append(bytes(16 * MAX_GRPC_MESSAGE))
    with grpc.insecure_channel(url(served, "grpc"), compression=grpc.Compression.Gzip) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            call(request.SerializeToString(), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in str(info.value.details())


def test_an_oversized_body_is_413(served: Server) -> None:
    code, payload, _ = post(url(served, "http"), INFER, b" " * (MAX_HTTP_BODY + 1))
    assert code == 413 and "--http-max-input-size" in orjson.loads(payload)["error"]


# -- shapes claimed but not carried ------------------------------------------------------------

HUGE = 10**12  # elements: terabytes if anything were allocated for them
# (case, tensors, raw bytes per input or None for JSON / typed contents, text in the error)
CLAIMS = [
    ("BYTES claim", [("input_ids", "BYTES", [1, HUGE], None)], [b"\0" * 64],
     "shape [1, 1000000000000] claims more elements than"),
    ("empty but vast", [("input_ids", "INT64", [0, 2**62], [])], None,
     "claims more elements than"),
    ("empty, vast twice", [("input_ids", "INT64", [0, 2**40, 2**40], [])], None,
     "claims more elements than"),
    ("rank", [("input_ids", "INT64", [1] * 33, [1])], None, "33 dimensions; at most 32"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "tensors", "raw", "message"), CLAIMS, ids=[c[0] for c in CLAIMS])
def test_a_claimed_shape_costs_nothing_beyond_the_bytes_sent(
    served: Server, http: Client, case, tensors, raw, message
) -> None:
    if raw is None:
        body, headers = json_body(tensors), {}
    else:
        doc = {"inputs": [{"name": n, "datatype": d, "shape": s,
                           "parameters": {"binary_data_size": len(r)}}
                          for (n, d, s, _), r in zip(tensors, raw, strict=True)]}  # fmt: skip
        header = orjson.dumps(doc)
        body = header + b"".join(raw)
        headers = {"Inference-Header-Content-Length": str(len(header))}
    code, payload, _ = post(url(served, "http"), INFER, body, headers)
    assert code == 400, payload
    assert message in orjson.loads(payload)["error"]
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer(url(served, "grpc"), grpc_request(tensors, raw=raw))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(info.value.details())
    assert http.infer("tiny", http.inputs(feed())).as_numpy("start_logits").shape == (1, 16)


# -- the low ones: each a 4xx with a message, not a 500 or a silent acceptance --------------


def test_a_boolean_is_not_a_dimension(served: Server) -> None:
    body = orjson.dumps({"inputs": [
        {"name": n, "datatype": "INT64", "shape": [True, 4], "data": [1, 2, 3, 4]}
        for n in ("input_ids", "attention_mask", "token_type_ids")]})  # fmt: skip
    code, payload, _ = post(url(served, "http"), INFER, body)
    assert code == 400 and "non-negative integers" in orjson.loads(payload)["error"]


@pytest.mark.parametrize("length", ["+{n}", " {n} ", "{n}_0", "0x{n}", "{n}.0", "-0"])
def test_inference_header_content_length_is_decimal_digits_only(
    served: Server, length: str
) -> None:
    body = json_body(good(values=[1, 1, 0, 0]))
    headers = {"Inference-Header-Content-Length": length.format(n=len(body))}
    code, payload, _ = post(url(served, "http"), INFER, body, headers)
    assert code == 400, payload
    assert "is not a byte count (decimal digits only)" in orjson.loads(payload)["error"]


def test_an_empty_tensor_is_an_empty_tensor(client: Client) -> None:
    """`"data": []` has no values of any type; it used to be refused as float64."""
    empty = {name: np.zeros((1, 0), np.int64) for name in feed()}
    if client.protocol == "http":
        doc = {"inputs": [{"name": n, "datatype": "INT64", "shape": [1, 0], "data": []}
                          for n in empty]}  # fmt: skip
        code, payload, _ = post(client.url, INFER, orjson.dumps(doc))
        assert code == 200, payload
        assert orjson.loads(payload)["outputs"][0]["shape"] == [1, 0]
    result = client.infer("tiny", client.inputs(empty))
    assert result.as_numpy("start_logits").shape == (1, 0)


@pytest.mark.parametrize(
    ("datatype", "values", "bad"),
    [("UINT8", [1, 300], 300), ("INT8", [-129, 0], -129), ("UINT64", [-1], -1),
     ("INT32", [2**31], 2**31), ("FP16", [1.5, 65520], "65520.0"), ("FP32", [-1e39], "-1e+39")],
)  # fmt: skip
def test_json_values_that_do_not_fit_the_datatype_are_refused(
    datatype: str, values: list[int], bad: int
) -> None:
    """numpy's astype would wrap them silently (300 as UINT8 is 44)."""
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(values)], "data": values}]}
    )
    with pytest.raises(InvalidInput, match=re.escape(f"value {bad} does not fit {datatype}")):
        decode_request(body, None, "m", "")

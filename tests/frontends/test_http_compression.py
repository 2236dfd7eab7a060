"""HTTP compression as tritonclient asks for it: compressed request bodies
(`request_compression_algorithm`) and compressed responses (`response_compression_algorithm`,
Accept-Encoding), gzip and deflate."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from bertserve.server import Server
from tests.frontends.conftest import url
from tests.frontends.messages import good, json_body, post
from tests.frontends.protocols import OUTPUTS, Client, feed


@pytest.mark.parametrize("request_algorithm", [None, "gzip", "deflate"])
@pytest.mark.parametrize("response_algorithm", [None, "gzip", "deflate"])
def test_compressed_both_ways(
    http: Client, request_algorithm: str | None, response_algorithm: str | None
) -> None:
    data = feed(seed=5)
    plain = http.infer("tiny", http.inputs(data))
    result = http.infer(
        "tiny",
        http.inputs(data),
        request_compression_algorithm=request_algorithm,
        response_compression_algorithm=response_algorithm,
    )
    for name in OUTPUTS:
        np.testing.assert_array_equal(result.as_numpy(name), plain.as_numpy(name))


def test_accept_encoding_weights_pick_the_encoding(served: Server) -> None:
    body = json_body(good(values=[1, 1, 0, 0]))  # ids in every vocabulary
    status, payload, headers = post(
        url(served, "http"), "/v2/models/tiny/infer", body,
        {"Accept-Encoding": "deflate;q=0.5, gzip;q=0.9, br"},
    )  # fmt: skip
    assert status == 200
    assert {k.lower(): v for k, v in headers.items()}["content-encoding"] == "gzip"
    assert gzip.decompress(payload).startswith(b"{")
    status, payload, headers = post(
        url(served, "http"), "/v2/models/tiny/infer", body, {"Accept-Encoding": "identity, br"}
    )
    assert "content-encoding" not in {k.lower() for k in headers}
    assert payload.startswith(b"{")

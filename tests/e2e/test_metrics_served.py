"""The metrics a real `bertserve serve` exposes after real requests: latency summaries behind
--metrics-config, CPU metrics, and an exposition promtool accepts."""

from __future__ import annotations

import math
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.conftest import TINY, start_server
from tests.server.prometheus_text import PROMTOOL, samples, unexpected_remarks

pytestmark = pytest.mark.e2e


def test_summaries_cpu_metrics_and_promtool(tiny_repo: Path) -> None:
    server = start_server(tiny_repo, extra=["--metrics-config", "summary_latencies=true"])
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            for _ in range(5):
                tensors = []
                for name in ("input_ids", "attention_mask", "token_type_ids"):
                    tensor = httpclient.InferInput(name, [1, 16], "INT64")
                    tensor.set_data_from_numpy(np.ones((1, 16), np.int64))
                    tensors.append(tensor)
                client.infer(TINY, tensors)
        finally:
            client.close()
        with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
            text = reply.read().decode()
    finally:
        server.stop()
    labels = f'{{model="{TINY}",version="1"'
    count = samples(text, "nv_inference_request_summary_us_count")[labels + "}"]
    assert count == samples(text, "nv_inference_request_success")[labels + "}"] == 5
    p99 = samples(text, "nv_inference_request_summary_us")[labels + ',quantile="0.99"}']
    assert not math.isnan(p99) and p99 > 0
    assert 0.0 <= samples(text, "nv_cpu_utilization")[""] <= 1.0
    assert samples(text, "nv_cpu_memory_total_bytes")[""] > 0
    if PROMTOOL is None:
        pytest.skip("promtool not installed: the exposition was not linted")
    assert not unexpected_remarks(text)

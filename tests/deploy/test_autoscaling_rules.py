"""prometheus-adapter's rules (deploy/helm/prometheus-adapter-values.yaml) run as the adapter runs
them: in a real Prometheus scraping a real server on loopback, labelled with namespace and pod
as the chart's ServiceMonitor makes Prometheus label them. One pod serves three models, one of
them busy: the queue-time rule must give that pod's true mean queue time (the server's own
statistics), where Triton's on-prem rule (a mean of per-model means) gives a third of it; the
pending-requests rule must see the requests waiting in the batcher."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http as httpclient
import yaml

from tests.conftest import TINY, ServerProcess, copy_model, find_tool, start_server
from tests.frontends.protocols import feed, inputs

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RULES = yaml.safe_load((ROOT / "deploy/helm/prometheus-adapter-values.yaml").read_text())
LABELS = {"namespace": "serving", "pod": "rel-bertserve-7d9f-abcde"}
CLIENTS = 6
#: The busy model's batcher waits this long for a batch of 8 that six clients never fill.
DELAY_US = 100_000
#: Triton's k8s-onprem chart's adapter rule for average queue time, for comparison.
ONPREM_RULE = (
    "avg(delta(nv_inference_queue_duration_us{<<.LabelMatchers>>}[30s])/"
    "(1+delta(nv_inference_request_success{<<.LabelMatchers>>}[30s]))) by (<<.GroupBy>>)"
)

PROMETHEUS = find_tool("prometheus", "BERTSERVE_PROMETHEUS")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus not found (scripts/install unpacks it from Debian's prometheus package)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rule(metric: str) -> dict:
    return next(r for r in RULES["rules"]["custom"] if r["name"]["as"] == metric)


def adapter_query(template: str, series: str) -> str:
    """The query the adapter sends for one pod: its template with the adapter's fields."""
    matchers = ",".join(f'{key}="{value}"' for key, value in LABELS.items())
    return (
        template.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", "pod")
    )


class Prometheus:
    def __init__(self, target: str, root: Path) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "bertserve",
                    "static_configs": [{"targets": [target], "labels": LABELS}],
                }
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(root / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("prometheus did not start: " + (root / "prometheus.log").read_text())

    def query(self, promql: str) -> float | None:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=10) as reply:
            data = json.load(reply)
        assert data["status"] == "success", data
        result = data["data"]["result"]
        if not result:
            return None
        assert len(result) == 1 and result[0]["metric"] == {"pod": LABELS["pod"]}, result
        return float(result[0]["value"][1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


@pytest.fixture
def busy_pod(tiny_repo: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, Prometheus]]:
    repo = tmp_path / "repo"
    copy_model(
        tiny_repo,
        TINY,
        repo,
        "busy",
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        f"dynamic_batching {{ max_queue_delay_microseconds: {DELAY_US} "
        "preferred_batch_size: 8 }\n",
    )
    for idle in ("idle_a", "idle_b"):
        copy_model(tiny_repo, TINY, repo, idle, 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    server = start_server(repo)
    prometheus = Prometheus(f"127.0.0.1:{server.ports['metrics']}", tmp_path)
    try:
        yield server, prometheus
    finally:
        prometheus.stop()
        assert server.stop() == 0


def load(server: ServerProcess, seconds: float) -> list[str]:
    failures: list[str] = []
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpclient.InferenceServerClient(server.http_url) as c:
            tensors = inputs(httpclient, feed())
            while time.monotonic() < stop:
                try:
                    c.infer("busy", tensors)
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return failures


@needs_prometheus
def test_adapter_rules_measure_the_pod_as_its_statistics_do(busy_pod):
    server, prometheus = busy_pod
    time.sleep(2.5)  # scrapes from before the load: rate() then spans all of it
    pending_rule = rule("bertserve_pending_requests")
    pending_query = adapter_query(
        pending_rule["metricsQuery"], "nv_inference_pending_request_count"
    )
    failures: list[str] = []
    loader = threading.Thread(target=lambda: failures.extend(load(server, 8)))
    loader.start()
    time.sleep(3)
    pending = []
    for _ in range(4):  # while six requests at a time wait out the batching delay
        pending.append(prometheus.query(pending_query))
        time.sleep(1.1)
    loader.join(60)
    assert failures == []
    # A scrape that overran its 1 s on a busy machine leaves no sample: None, not a reading.
    read = [p for p in pending if p is not None]
    assert len(read) >= 2 and all(0 <= p <= CLIENTS for p in read), pending
    assert max(read) >= CLIENTS / 2, pending

    time.sleep(2.5)  # the last scrapes after the load
    with httpclient.InferenceServerClient(server.http_url) as client:
        stats = client.get_inference_statistics("busy")["model_stats"][0]["inference_stats"]
    truth_us = int(stats["queue"]["ns"]) / int(stats["success"]["count"]) / 1000
    assert truth_us > DELAY_US / 2  # requests did wait in the batcher

    queue_rule = rule("bertserve_queue_time_us")
    ours = prometheus.query(adapter_query(queue_rule["metricsQuery"], ""))
    assert ours is not None
    assert ours == pytest.approx(truth_us, rel=0.1)
    # Triton's on-prem rule, evaluated over the same load (its 30 s window still covers it):
    # the two idle models count as zeros and the pod's queue time reads a third of the truth.
    onprem = prometheus.query(adapter_query(ONPREM_RULE, ""))
    assert onprem is not None and onprem < truth_us / 2

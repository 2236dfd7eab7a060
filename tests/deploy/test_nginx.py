"""The local ingress scenario (benchmarks/ingress.py): two `bertserve serve` replicas behind
nginx on loopback, configured from deploy/nginx/nginx.conf.template. Answers come back over
HTTP/1.1 and over gRPC (h2c), both replicas serve, and `bertserve perf` through nginx counts no
failed request."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import TINY, start_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
        reason="nginx not installed (Debian package nginx; .ci/run installs it)",
    ),
]

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def ingress() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import ingress

        yield ingress
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_two_replicas_behind_nginx_answer_over_both_protocols(ingress, tiny_repo, tmp_path):
    replicas = [start_server(tiny_repo) for _ in range(2)]
    nginx = None
    try:
        nginx, http, grpc = ingress.start_nginx(replicas, tmp_path / "nginx", TINY)
        shares = ingress.check_through(http, grpc, TINY, replicas)
        assert len(shares) == 2 and min(shares) > 0, shares  # least_conn used both
        assert sum(shares) == 40
        for protocol, url in (("http", http), ("grpc", grpc)):
            point = ingress.perf(url, protocol, TINY, 4, 300, tmp_path / f"{protocol}.json")
            assert point["throughput"] > 0 and point["p99_us"] >= point["p50_us"] > 0
    finally:
        if nginx is not None:
            assert nginx.stop() == 0
        for replica in replicas:
            assert replica.stop() == 0

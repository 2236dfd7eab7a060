"""What needs a real `bertserve serve` process: its open-file limit, and a flood of slow
connections against it (loopback, bounded in count and time)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import orjson
import pytest

from bertserve.launch import ServerProcess
from bertserve.server import RESERVED_DESCRIPTORS

pytestmark = pytest.mark.e2e

SOFT, HARD = 300, 1200  # the child's open-file limits, below this machine's


def _limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


def _health(address: str) -> int:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        return int(sock.recv(64).split()[1])


def test_slow_connections_beyond_the_descriptors_meet_a_clear_refusal(
    tiny_repo: Path, tmp_path: Path
) -> None:
    wrapper = tmp_path / "python"  # the server's interpreter under lower open-file limits
    wrapper.write_text(
        f'#!/bin/sh\nulimit -n {HARD}\nulimit -S -n {SOFT}\nexec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    flags = ["--log-verbose", "1", "--http-header-timeout-secs", "3"]
    server = ServerProcess(tiny_repo, args=flags, python=str(wrapper), ready_timeout=90).start()
    slow: list[socket.socket] = []
    try:
        assert _limits(server.pid) == (HARD, HARD)
        cap = (HARD - RESERVED_DESCRIPTORS) // 2  # both default caps (2048) lowered to fit
        output = server.output()
        assert f"open-file limit raised from {SOFT} to {HARD}" in output
        assert f"serving with {cap} and {HARD - RESERVED_DESCRIPTORS - cap}" in output
        host, port = server.http_url.split(":")
        refused: list[str] = []
        for _ in range(cap + 40):  # each sends half a request line and waits
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
            slow.append(sock)
        time.sleep(0.5)
        for sock in slow[cap:]:
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 503"), reply[:80]
            refused.append(orjson.loads(reply.split(b"\r\n\r\n", 1)[1])["error"])
        assert len(refused) == 40 and "(--http-max-connections)" in refused[0]
        for sock in slow[:cap]:  # the header timeout frees every slot they held
            assert sock.recv(4096).startswith(b"HTTP/1.1 408")
            sock.close()
        assert _health(server.http_url) == 200
        assert "Too many open files" not in server.output()
    finally:
        for sock in slow:
            sock.close()
        assert server.stop() == 0

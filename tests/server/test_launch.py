"""The launcher: ready on the start-up lines, ports parsed from them, a clear error when the
child dies at start or never gets ready, and the exit code of a drain (or of a kill).

Most tests launch stand-ins: small Python programs given as the launcher's interpreter, which
print what a server would and behave as told on SIGTERM. The real server is launched by the
session fixture `server` (and by every e2e test).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bertserve.announce import READY_LINE, started_line
from bertserve.launch import ChildProcess, LaunchError, ServerProcess, serve_command

_PRELUDE = """\
import json, os, signal, sys, time
def on_term(*_):
    print("draining", flush=True)
    sys.exit(EXIT_ON_TERM)
signal.signal(signal.SIGTERM, on_term)
"""


def stand_in(tmp_path: Path, body: str, *, exit_on_term: int = 0) -> str:
    """An executable that runs `body` after the prelude, whatever arguments it is given."""
    script = tmp_path / "stand_in.py"
    prelude = _PRELUDE.replace("EXIT_ON_TERM", str(exit_on_term))
    script.write_text(f"#!{sys.executable}\n{prelude}{body}\n")
    script.chmod(0o755)
    return str(script)


def announce(host: str = "127.0.0.1") -> str:
    """Body: print the start-up lines of three services and the ready line, then idle."""
    lines = [started_line(s, host, p) for s, p in (("http", 8101), ("grpc", 8102))]
    lines += [started_line("metrics", host, 8103), READY_LINE]
    text = "\n".join(lines)
    return f"print({text!r}, flush=True)\nwhile True: time.sleep(1)"


def test_ready_on_the_ready_line_with_ports_from_the_start_up_lines(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, python=stand_in(tmp_path, announce())) as server:
        assert server.ports == {"http": 8101, "grpc": 8102, "metrics": 8103}
        assert server.http_url == "127.0.0.1:8101"
        assert server.grpc_url == "127.0.0.1:8102"
        assert server.metrics_url == "http://127.0.0.1:8103/metrics"
        assert server.returncode is None
    assert server.returncode == 0
    assert server.output().endswith("draining\n")


@pytest.mark.parametrize(
    ("host", "dialled"),
    [("0.0.0.0", "127.0.0.1:8101"), ("::", "[::1]:8101"), ("::1", "[::1]:8101")],
)
def test_a_bind_all_address_is_dialled_on_loopback(tmp_path: Path, host: str, dialled: str) -> None:
    with ServerProcess(tmp_path, python=stand_in(tmp_path, announce(host))) as server:
        assert server.http_url == dialled


def test_a_service_that_did_not_start_is_named(tmp_path: Path) -> None:
    body = f"print({started_line('http', '127.0.0.1', 8101)!r}, {READY_LINE!r}, sep='\\n')\n"
    body += "while True: time.sleep(1)"
    with ServerProcess(tmp_path, python=stand_in(tmp_path, body)) as server:
        assert server.ports == {"http": 8101}
        with pytest.raises(LaunchError, match="no grpc port .*--allow-grpc false.*announced http"):
            server.address("grpc")


def test_serve_command_takes_free_ports_and_extra_flags_last(tmp_path: Path) -> None:
    command = serve_command([tmp_path / "a", "b"], ["--http-port", "9000"], python="py")
    assert command == [
        "py", "-m", "bertserve", "serve",
        "--model-repository", str(tmp_path / "a"), "--model-repository", "b",
        "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
        "--http-port", "9000",
    ]  # fmt: skip


def test_the_child_gets_the_command_environment_and_pythonpath(tmp_path: Path) -> None:
    report = "print(json.dumps([sys.argv[1:], os.environ.get('PYTHONPATH'),"
    report += " os.environ['PYTHONUNBUFFERED'], os.environ.get('MARK')]), flush=True)\n"
    python = stand_in(tmp_path, report + announce())
    env = {**os.environ, "PYTHONPATH": "/elsewhere", "MARK": "set"}
    log = tmp_path / "server.log"
    with ServerProcess(
        "repo", args=["--log-verbose", "1"], python=python, env=env, pythonpath=["src"], log=log
    ) as server:
        argv, pythonpath, unbuffered, mark = json.loads(server.lines[0])
    assert argv == serve_command(["repo"], ["--log-verbose", "1"])[1:]
    assert pythonpath == os.pathsep.join([str(Path("src").resolve()), "/elsewhere"])
    assert (unbuffered, mark) == ("1", "set")
    assert log.read_text() == server.output()
    assert READY_LINE in log.read_text()


def test_a_child_that_dies_at_start_fails_with_its_output(tmp_path: Path) -> None:
    python = stand_in(tmp_path, "print('no such repository: /nowhere', flush=True)\nsys.exit(3)")
    server = ServerProcess("/nowhere", python=python, log=tmp_path / "server.log")
    with pytest.raises(LaunchError) as failed:
        server.start()
    message = str(failed.value)
    assert "bertserve serve exited with code 3 before it was ready" in message
    assert f"(log {tmp_path / 'server.log'})" in message
    assert message.endswith("no such repository: /nowhere\n")


def test_a_child_that_is_never_ready_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    python = stand_in(tmp_path, "print('loading', flush=True)\nwhile True: time.sleep(1)")
    server = ServerProcess("repo", python=python, ready_timeout=2)
    with pytest.raises(LaunchError, match=r"not ready after 2 s and was stopped:\nloading\n"):
        server.start()
    assert server.returncode is not None  # stopped, not left running
    assert not server.killed


@pytest.mark.parametrize("code", [0, 7])
def test_stop_drains_and_returns_the_exit_code(tmp_path: Path, code: int) -> None:
    server = ServerProcess("repo", python=stand_in(tmp_path, announce(), exit_on_term=code))
    server.start()
    assert server.stop() == code
    assert server.stop() == code  # a second stop only reports
    assert not server.killed
    assert server.output().endswith("draining\n")


def test_a_child_that_ignores_sigterm_is_killed_after_the_exit_timeout(tmp_path: Path) -> None:
    body = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + announce()
    server = ServerProcess("repo", python=stand_in(tmp_path, body), exit_timeout=0.5).start()
    assert server.stop() == -9
    assert server.killed


def test_any_program_is_ready_when_its_check_says_so(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    body = f"time.sleep(0.3)\nopen({str(flag)!r}, 'w').close()\nwhile True: time.sleep(1)"
    child = ChildProcess([stand_in(tmp_path, body)], name="stand-in", ready=flag.exists)
    with child:
        assert flag.exists()
    assert child.returncode == 0


def test_a_failure_while_waiting_stops_the_child(tmp_path: Path) -> None:
    def interrupted() -> bool:
        raise KeyboardInterrupt

    child = ChildProcess([stand_in(tmp_path, announce())], ready=interrupted)
    with pytest.raises(KeyboardInterrupt):
        child.start()
    assert child.returncode is not None  # stopped (perhaps before its handler was set)


def test_misuse_is_explained(tmp_path: Path) -> None:
    server = ServerProcess("repo", python=stand_in(tmp_path, announce()))
    with pytest.raises(LaunchError, match="not started: call start"):
        server.stop()
    with server, pytest.raises(LaunchError, match="started already"):
        server.start()
    with pytest.raises(LaunchError, match="cannot run /no/such/python"):
        ServerProcess("repo", python="/no/such/python").start()


def test_the_real_server_announces_every_port(server: ServerProcess) -> None:
    assert set(server.ports) == {"http", "grpc", "metrics"}
    assert all(port > 0 for port in server.ports.values())
    assert server.http_url == f"127.0.0.1:{server.ports['http']}"
    assert READY_LINE in server.output()

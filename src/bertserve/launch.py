"""Start a server as a child process, wait until it takes requests, stop it with a drain: the
one launcher the tests, the demo and the benchmarks share.

`ServerProcess` runs `bertserve serve` with every port 0; the ports it took come from its
start-up lines and it is ready at `READY_LINE` (both from `bertserve.announce`). `ChildProcess`
is the same life cycle for any server program (the benchmarks' PyTriton and MLServer), ready
when a check of the caller's says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bertserve.announce import READY_LINE, SERVICES, parse_started
from bertserve.errors import BertserveError

__all__ = ["ChildProcess", "LaunchError", "ServerProcess", "serve_command"]

#: Output lines a launch failure quotes.
_TAIL_LINES = 30
#: Bind-all addresses, and the loopback address a client on this machine dials instead.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class LaunchError(BertserveError):
    """A child never became ready (it exited, or took too long); the message quotes its output."""


class ChildProcess:
    """A server program as a child process.

    Its output (stderr merged into stdout) is read line by line on a thread: kept in `lines`,
    and copied to `log` when given. `start` returns once `ready()` is true, and raises
    `LaunchError` if the child exits first or `ready_timeout` passes. `stop` sends SIGTERM (a
    server drains its in-flight requests), SIGKILL after `exit_timeout`, and returns the exit
    code. The child leads its own process group and signals go to the group, so the programs
    it starts (tritonserver under PyTriton, MLServer's workers) stop with it. Also a context
    manager: `with ChildProcess(...) as child:` starts and stops it.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        ready: Callable[[], bool] | None = None,
        ready_timeout: float = 120.0,
        exit_timeout: float = 30.0,
        poll_interval: float = 0.2,
    ) -> None:
        self.command = list(command)
        self.name = name or Path(self.command[0]).name
        self.env = dict(os.environ if env is None else env)
        self.log = log
        self.ready_timeout = ready_timeout
        self.exit_timeout = exit_timeout
        self.poll_interval = poll_interval
        #: Every line the child wrote so far, newline included.
        self.lines: list[str] = []
        #: True when `stop` had to kill the child after `exit_timeout`.
        self.killed = False
        self._ready = ready
        self._proc: subprocess.Popen[str] | None = None
        self._pump: threading.Thread | None = None
        self._news = threading.Event()  # set by the pump on each line and at the end

    # -- what subclasses refine

    def is_ready(self) -> bool:
        return self._ready is None or self._ready()

    def on_line(self, line: str) -> None:
        """Called on the pump thread for each line of output, before it is kept."""

    # -- life cycle

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has exited (negative: the signal that ended it)."""
        return self._started().poll()

    def start(self) -> Self:
        if self._proc is not None:
            raise LaunchError(f"{self.name} was started already (pid {self._proc.pid})")
        log = self.log.open("w", encoding="utf-8") if self.log is not None else None
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            if log is not None:
                log.close()
            raise LaunchError(f"cannot run {self.command[0]}: {exc.strerror or exc}") from None
        assert self._proc.stdout is not None
        self._pump = threading.Thread(
            target=self._read, args=(self._proc.stdout, log), name=f"{self.name} output"
        )
        self._pump.daemon = True
        self._pump.start()
        try:
            self._wait_ready()
        except BaseException:
            # Ctrl-C included: the child leads its own process group, so nothing else would
            # stop it.
            self.stop()
            raise
        return self

    def stop(self) -> int:
        """Drain (SIGTERM), kill after `exit_timeout`; the exit code. Stopping twice is fine."""
        proc = self._started()
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(self.exit_timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self._signal(signal.SIGKILL)
                proc.wait()
        if self._pump is not None:
            # The output ends when the child's last writer exits; a stray grandchild holding
            # the pipe must not hang the caller.
            self._pump.join(10)
        return proc.returncode

    def __enter__(self) -> Self:
        return self if self._proc is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def output(self) -> str:
        return "".join(self.lines)

    def tail(self, count: int = _TAIL_LINES) -> str:
        return "".join(self.lines[-count:])

    # -- internals

    def _started(self) -> subprocess.Popen[str]:
        if self._proc is None:
            raise LaunchError(f"{self.name} is not started: call start() first")
        return self._proc

    def _read(self, stream: IO[str], log: IO[str] | None) -> None:
        try:
            for line in stream:
                self.on_line(line)
                self.lines.append(line)
                if log is not None:
                    log.write(line)
                    log.flush()
                self._news.set()
        finally:
            stream.close()
            if log is not None:
                log.close()
            self._news.set()

    def _wait_ready(self) -> None:
        proc = self._started()
        deadline = time.monotonic() + self.ready_timeout
        while not self.is_ready():
            if proc.poll() is not None:
                if self._pump is not None:
                    self._pump.join(10)  # every line it wrote, for the message
                raise LaunchError(
                    f"{self.name} exited with code {proc.returncode} before it was ready"
                    f"{self._where()}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"{self.name} was not ready after {self.ready_timeout:g} s and was stopped"
                    f"{self._where()}:\n{self.tail()}"
                )
            self._news.wait(self.poll_interval)
            self._news.clear()

    def _where(self) -> str:
        return f" (log {self.log})" if self.log is not None else ""

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self._started().pid, sig)


def serve_command(
    repositories: Sequence[Path | str], args: Sequence[str] = (), python: str | None = None
) -> list[str]:
    """`bertserve serve` over `repositories` on free ports (port 0), then `args` (which win)."""
    command = [python or sys.executable, "-m", "bertserve", "serve"]
    for repo in repositories:
        command += ["--model-repository", str(repo)]
    for service in SERVICES:
        command += [f"--{service}-port", "0"]
    return [*command, *args]


class ServerProcess(ChildProcess):
    """`bertserve serve` as a child process on free ports.

    `args` are more `bertserve serve` flags. `python` runs it (default: this interpreter);
    `pythonpath` entries go before the environment's PYTHONPATH, so that a benchmark can serve
    another build of bertserve (an older checkout's `src/`, say). `ports` maps each started
    service (http, grpc, metrics) to the port it took.
    """

    def __init__(
        self,
        *repositories: Path | str,
        args: Sequence[str] = (),
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[Path | str] = (),
        log: Path | None = None,
        ready_timeout: float = 120.0,
        exit_timeout: float = 30.0,
    ) -> None:
        child_env = dict(os.environ if env is None else env)
        # Python buffers a pipe's output: the start-up lines must arrive as they are printed.
        child_env["PYTHONUNBUFFERED"] = "1"
        if pythonpath:
            paths = [str(Path(p).resolve()) for p in pythonpath]
            child_env["PYTHONPATH"] = os.pathsep.join(
                [*paths, *filter(None, [child_env.get("PYTHONPATH")])]
            )
        super().__init__(
            serve_command(repositories, args, python),
            name="bertserve serve",
            env=child_env,
            log=log,
            ready_timeout=ready_timeout,
            exit_timeout=exit_timeout,
        )
        self.ports: dict[str, int] = {}
        self._hosts: dict[str, str] = {}
        self._ready_seen = False

    def is_ready(self) -> bool:
        return self._ready_seen

    def on_line(self, line: str) -> None:
        started = parse_started(line)
        if started is not None:
            service, host, port = started
            self._hosts[service] = host
            self.ports[service] = port
        elif READY_LINE in line:
            self._ready_seen = True

    def address(self, service: str) -> str:
        """host:port a client on this machine dials for `service` (http, grpc or metrics)."""
        if service not in self.ports:
            raise LaunchError(
                f"bertserve serve announced no {service} port (is --allow-{service} false?); "
                f"it announced {', '.join(sorted(self.ports)) or 'none'}"
            )
        host = self._hosts[service]
        host = _WILDCARDS.get(host, host)
        return f"[{host}]:{self.ports[service]}" if ":" in host else f"{host}:{self.ports[service]}"

    @property
    def http_url(self) -> str:
        """host:port of the HTTP service, as tritonclient and perf_analyzer take it."""
        return self.address("http")

    @property
    def grpc_url(self) -> str:
        return self.address("grpc")

    @property
    def metrics_url(self) -> str:
        """The full URL of the Prometheus page."""
        return f"http://{self.address('metrics')}/metrics"

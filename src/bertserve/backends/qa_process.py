"""A QA pipeline instance's text work in a process of its own (`processes: true`).

The engine's process runs one Python thread at a time. A pipeline's tokenizing, window
assembly and span decoding are Python and numpy work a window, and on the instance threads
they shared that one GIL with the event loop and the GPU model's instance threads, so the
text path reached 59-92% of the model on the same windows depending on the host
(docs/gpu-notes.md). Here each instance hands that work to a child process: the instance
thread sends the batch's texts and gets the QA model's feeds back, sends the calls' logits
and gets the answers back (`qa_text.TextWork` on the other side, the same code the thread
runs in-process). What stays in the engine's process is two round trips a batch.

The child is `python -m bertserve.backends.qa_process FD`, started with the interpreter
and the bertserve package of the engine, and speaks over one end of a socket pair with
`multiprocessing.connection` framing (pickled messages; both ends are bertserve's own, and
a message holds only texts, numbers, numpy arrays and bertserve's errors):

    parent -> child                         child -> parent
    ("start", settings, tokenizer path)     ("ready",) or ("error", exception)
    ("prepare", {question, context})        ("ok", feeds) or ("error", exception)
    ("answer", logits)                      ("ok", columns) or ("error", exception)
    ("stop",)                               (exits)

A round trip costs ~0.15-0.2 ms on the development VM, the child's wake-up and the two
pickles; the raw bytes of each array instead of the arrays pickled made no difference there.

A child that dies fails the batch it held with an InternalError naming the model and the
exit code; the next batch starts a new one. The child exits when its parent goes away (its
end of the socket pair reads EOF).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

import bertserve
from bertserve.backends.qa_settings import PipelineSettings
from bertserve.backends.qa_text import Logits, TextWork
from bertserve.errors import BertserveError, ConfigError, InternalError
from bertserve.qa.windows import Windower

__all__ = ["TextProcess", "serve"]

log = logging.getLogger("bertserve.qa")

#: How long a new child may take to import, read its tokenizer and answer (seconds).
START_TIMEOUT_S = 60.0
#: How long a child asked to stop may take before it is killed (seconds).
STOP_TIMEOUT_S = 5.0


class TextProcess:
    """The parent's end: one child, used by one instance thread at a time."""

    def __init__(self, model: str, settings: PipelineSettings, tokenizer: Path) -> None:
        self.model = model
        self.settings = settings
        self.tokenizer = tokenizer
        self._child: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one message exchange at a time
        self._start()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        feeds: list[dict[str, np.ndarray]] = self._ask("prepare", _texts(inputs))
        return feeds

    def answer_columns(self, logits: Sequence[Logits]) -> dict[str, np.ndarray]:
        columns: dict[str, np.ndarray] = self._ask("answer", list(logits))
        return columns

    def close(self) -> None:
        with self._lock:
            self._stop()

    # -- the exchange ----------------------------------------------------------------------------

    def _ask(self, *message: object) -> Any:
        with self._lock:
            if self._conn is None:  # the last child died: a new one for this batch
                try:
                    self._start()
                except BertserveError as exc:
                    raise InternalError(
                        f"model '{self.model}': a new text process could not start: {exc}"
                    ) from None
            assert self._conn is not None
            try:
                self._conn.send(message)
                reply = self._conn.recv()
            except (EOFError, OSError):
                raise self._died() from None
        if reply[0] == "error":
            raise reply[1]
        return reply[1]

    def _start(self) -> None:
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ)
        # The child imports the same bertserve as this process, wherever it was found.
        package_root = str(Path(bertserve.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "bertserve.backends.qa_process", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            child_end.close()
        conn = Connection(parent_end.detach())
        try:
            conn.send(("start", self.settings, str(self.tokenizer)))
            if not conn.poll(START_TIMEOUT_S):
                raise ConfigError(
                    f"model '{self.model}': a text process did not start within "
                    f"{START_TIMEOUT_S:.0f} s"
                )
            reply = conn.recv()
        except (EOFError, OSError):
            code = child.wait()
            conn.close()
            raise ConfigError(
                f"model '{self.model}': a text process exited at start (code {code}); "
                "its error is in the server's log"
            ) from None
        except BaseException:
            _end(child, conn)
            raise
        if reply[0] == "error":
            _end(child, conn)
            raise reply[1]
        self._child, self._conn = child, conn

    def _died(self) -> InternalError:
        child, conn = self._child, self._conn
        assert child is not None and conn is not None  # set and cleared together
        self._child = self._conn = None
        code = _end(child, conn)
        log.error("model '%s': text process %s exited (code %s)", self.model, child.pid, code)
        return InternalError(
            f"model '{self.model}': the text process of this request's batch exited (code "
            f"{code}); a new one starts for the next batch"
        )

    def _stop(self) -> None:
        child, conn = self._child, self._conn
        self._child = self._conn = None
        if child is None or conn is None:
            return
        with contextlib.suppress(OSError):
            conn.send(("stop",))
        _end(child, conn)


def _texts(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The two text inputs, nothing else of the request (a missing one is named by the
    child's checks, as on a thread)."""
    return {name: inputs[name] for name in ("question", "context") if name in inputs}


def _end(child: subprocess.Popen[bytes], conn: Connection) -> int:
    """Wait for `child` to exit (killed after STOP_TIMEOUT_S), close its connection; its
    exit code."""
    try:
        code = child.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        code = child.wait()
    conn.close()
    return code


# -- the child -------------------------------------------------------------------------------


def serve(conn: Connection) -> None:
    """The child's loop: answer the parent's messages until "stop" or the parent is gone."""
    try:
        kind, settings, tokenizer = conn.recv()
    except EOFError:
        return
    assert kind == "start"
    try:
        work = TextWork(settings, Windower.from_file(Path(tokenizer), settings.windows))
    except BertserveError as exc:
        conn.send(("error", exc))
        return
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        kind = message[0]
        if kind == "stop":
            return
        try:
            if kind == "prepare":
                reply: tuple[object, ...] = ("ok", work.prepare(message[1]))
            elif kind == "answer":
                reply = ("ok", work.answer_columns(message[1]))
            else:
                reply = ("error", InternalError(f"a text process got an unknown message {kind!r}"))
        except BertserveError as exc:
            reply = ("error", exc)
        except Exception as exc:  # noqa: BLE001 - the parent fails the batch, the child serves on
            logging.getLogger("bertserve.qa").exception("the QA pipeline's text work failed")
            reply = ("error", InternalError(f"the QA pipeline's text work failed: {exc}"))
        conn.send(reply)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    serve(Connection(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

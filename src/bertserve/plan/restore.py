"""The promise that the plan leaves the server as it found it: every model the search loads is
remembered first (loaded or not, with its config), and put back at the end, whatever ended
the search (a finished search, an error, Ctrl-C or SIGTERM). While the models are being put
back, Ctrl-C and SIGTERM are held off (and said so), so that a second Ctrl-C cannot leave a
candidate config serving."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tritonclient.grpc import model_config_pb2

from bertserve.plan.control import ControlError, ModelControl
from bertserve.plan.knobs import config_pbtxt

__all__ = ["Restoration", "Snapshot", "interruptible", "original_path"]

#: Attempts per model before the restore gives up on it (and says what to do by hand).
ATTEMPTS = 3


@dataclass(frozen=True)
class Snapshot:
    model: str
    #: Whether it was loaded and ready when the plan first touched it.
    loaded: bool
    #: Its config then (None when it was not loaded).
    config: model_config_pb2.ModelConfig | None


def original_path(folder: Path, model: str) -> Path:
    """Where a model's config is kept before the plan changes it."""
    return folder / f"original-{model}.pbtxt"


class Restoration:
    """Remembers models before the plan changes them; `restore()` puts them back. With a
    `folder`, each loaded model's config is also written there first (what to load by hand
    should the server not be put back)."""

    def __init__(
        self,
        control: ModelControl,
        say: Callable[[str], None] = print,
        folder: Path | None = None,
    ) -> None:
        self.control = control
        self.say = say
        self.folder = folder
        self.snapshots: dict[str, Snapshot] = {}

    def remember(self, model: str) -> Snapshot:
        """Record `model` as it is now, once (later calls keep the first record)."""
        if model not in self.snapshots:
            loaded = self.control.ready(model)
            config = self.control.config(model) if loaded else None
            self.snapshots[model] = Snapshot(model, loaded, config)
            if config is not None and self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                original_path(self.folder, model).write_text(
                    f"# '{model}' as the server had it loaded before bertserve plan changed "
                    "it.\n" + config_pbtxt(config),
                    encoding="utf-8",
                )
        return self.snapshots[model]

    def restore(self) -> list[str]:
        """Put every remembered model back (the first remembered last); the problems left,
        each with what to do about it (empty when all went back)."""
        problems = []
        with _held_signals(self.say):
            for snapshot in reversed(list(self.snapshots.values())):
                problem = self._put_back(snapshot)
                if problem:
                    problems.append(problem)
        return problems

    def _put_back(self, snapshot: Snapshot) -> str | None:
        error: ControlError | None = None
        for attempt in range(ATTEMPTS):
            try:
                if snapshot.loaded:
                    self.control.load(snapshot.model, snapshot.config)
                else:
                    self.control.unload(snapshot.model)
                return None
            except ControlError as exc:
                error = exc
                time.sleep(min(1.0 * 2**attempt, 4.0))
        if snapshot.loaded:
            kept = f" ({original_path(self.folder, snapshot.model)})" if self.folder else ""
            return (
                f"'{snapshot.model}' could not be loaded again with its original config "
                f"({error}); load it by hand with that config{kept}: POST "
                f"/v2/repository/models/{snapshot.model}/load"
            )
        return (
            f"'{snapshot.model}' was not loaded before the plan and could not be unloaded "
            f"({error}); unload it by hand (POST /v2/repository/models/{snapshot.model}/unload)"
        )


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM ends the plan as Ctrl-C does, so the restore still runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        # Through SIGINT's own handler, not by raising here: inside a measurement that is
        # the event loop's, which cancels the sweep cleanly; raising from an arbitrary
        # point could land inside a transport callback and break a connection instead.
        # A plan started with SIGINT ignored (a shell's background job, nohup) has no such
        # handler: there SIGTERM raises, so that it still ends the plan and restores.
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _held_signals(say: Callable[[str], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        say("putting the original configs back first; the plan ends right after")

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

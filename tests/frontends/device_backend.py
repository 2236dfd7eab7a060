"""A backend for the front-end tests whose instances compute as a device does: a launch
queues the batch on a "stream" (one thread of its own, in launch order) and returns at once
with an InFlight that tells when the batch is done, so the scheduler launches a lone request
from the event loop and watches it there. Doubles INPUT0; a request whose first value is
-1 is refused by the launch, -2 fails on the device (its wait raises), -3 fails on the
device and in the query of its state (the first value of any row of a batch: a batch holds
several requests). Each launch and wait is logged for every row with its thread's name
(`LOG`), for the tests to see which path a request took."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bertserve.backends.base import Backend, Device, InFlight, LoadContext, ModelInstance
from bertserve.errors import InvalidInput

__all__ = ["LOG", "DeviceLikeBackend"]

#: (what, first value, thread name) for every launch and wait, in order.
LOG: list[tuple[str, float, str]] = []


class _Stream:
    """One thread computing batches in launch order, each after a short while."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stream")

    def compute(self, x: np.ndarray) -> concurrent.futures.Future[np.ndarray]:
        def work() -> np.ndarray:
            threading.Event().wait(0.002)  # the device's time
            if np.isin(x[:, 0], (-2, -3)).any():
                raise RuntimeError("device fault: an illegal memory access")
            return x * 2

        return self.pool.submit(work)


class DeviceLikeInstance(ModelInstance):
    asynchronous = True

    def __init__(self) -> None:
        self.stream = _Stream()

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return self.launch(inputs, outputs)()

    def launch(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> InFlight[Any]:
        x = np.asarray(inputs["INPUT0"])
        firsts = [float(v) for v in x[:, 0]]  # each row's (a batch holds several requests)
        thread = threading.current_thread().name
        LOG.extend(("launch", first, thread) for first in firsts)
        if -1.0 in firsts:
            raise InvalidInput("INPUT0 starts with -1, which this model refuses")
        done = self.stream.compute(x)

        def wait() -> dict[str, np.ndarray]:
            thread = threading.current_thread().name
            LOG.extend(("wait", first, thread) for first in firsts)
            return {"OUTPUT0": done.result(5)}

        def ready() -> bool:
            if -3.0 in firsts and done.done():
                raise RuntimeError("device fault: the event query failed")
            return done.done()

        return InFlight(wait, ready)

    def close(self) -> None:
        self.stream.pool.shutdown(wait=True)


class DeviceLikeBackend(Backend):
    name = "device_like"
    default_model_filename = "model.device"

    def autocomplete(self, config: Any, model_path: Path, options: Any = None) -> None:
        """The config lists its tensors."""

    def gpu_capable(self) -> bool:
        return False

    def load(
        self, config: Any, model_path: Path, device: Device, context: LoadContext
    ) -> ModelInstance:
        return DeviceLikeInstance()

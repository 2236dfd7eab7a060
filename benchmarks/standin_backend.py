"""A stand-in for the GPU engine, so the server's CPU side can be measured on a CPU.

`bertserve_standin` takes BERT QA inputs and returns start/end logits like `bertserve_torch`
on a GPU: it is asynchronous (launch stages the batch and returns; the wait comes later), it
packs variable-length rows when `packing` is true, and its "device" takes time in proportion
to the tokens of a batch. The device is a clock, not a thread: a launch books the device
from when it is free for `launch_us + tokens * ns_per_token`, and the wait sleeps (GIL
released, as `cudaEventSynchronize` does) until then. The instances of one model share one
clock, as two CUDA streams share one GPU. The CPU work is the engine's own: the packed
tokens are copied into a reused staging slot, and the logits copied out of one. As the
engine's, a pass tells when it is done (`InFlight.ready`) where the server's build knows
InFlight; on an older build (a baseline's src/) it is a plain callable, as that build's
engine returned.

The server loads it when this folder's `standin_site/` is on PYTHONPATH (its
`sitecustomize.py` adds the backend to the registry): `benchmarks/frontend_cpu.py` does that.
Parameters (config.pbtxt, strings): `packing` (true/false), `max_tokens` (packing budget,
default 32768), `launch_us` (fixed device time of a pass, default 550), `ns_per_token`
(default 400: about the H200's fp16 packed engine on the SQuAD mix).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertserve.backends.base import Backend, Device, LoadContext, ModelInstance
from bertserve.backends.io_spec import (
    TensorSpec,
    autocomplete_io,
    check_io,
    default_max_batch_size,
)
from bertserve.backends.packing import PackedBatch, PackingSpec, pack, unpack
from bertserve.backends.parameters import ModelParameters
from bertserve.booleans import parse_bool

try:
    from bertserve.backends.base import InFlight
except ImportError:  # a build from before InFlight
    InFlight = None

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

__all__ = ["StandInBackend", "StandInInstance"]

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("start_logits", "end_logits")


class _Clock:
    """One device's timeline: when it is free next."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free_at = 0.0

    def book(self, seconds: float) -> float:
        with self.lock:
            start = max(self.free_at, time.perf_counter())
            self.free_at = start + seconds
            return self.free_at


def _then(wait: Callable[[], Any], after: Callable[[Any], Any]) -> Callable[[], Any]:
    """`wait`'s result through `after`, telling when it is done as `wait` does."""
    if InFlight is not None and isinstance(wait, InFlight):
        return wait.then(after)
    return lambda: after(wait())


class StandInInstance(ModelInstance):
    asynchronous = True

    def __init__(self, clock: _Clock, params: Mapping[str, str], max_batch: int) -> None:
        self.clock = clock
        self.launch_s = float(params.get("launch_us", 550)) / 1e6
        self.s_per_token = float(params.get("ns_per_token", 400)) / 1e9
        tokens = int(params.get("max_tokens", 32768))
        self.packing = (
            PackingSpec(tokens, min(max_batch, tokens // 16), "attention_mask")
            if parse_bool(params.get("packing", "false"))
            else None
        )
        width = tokens if self.packing else max_batch * 384
        self.slots = [np.zeros((3, width), np.int64) for _ in range(2)]
        self.outs = [np.zeros((2, width), np.float32) for _ in range(2)]
        self.slot = 0

    def _start(self, columns: list[np.ndarray], n: int) -> Callable[[], np.ndarray]:
        slot = self.slot
        self.slot ^= 1
        staged, out = self.slots[slot], self.outs[slot]
        for row, column in enumerate(columns):
            staged[row, :n] = column
        # "logits": something of the inputs, so a wrong split would show in a test
        out[0, :n] = staged[0, :n]
        out[1, :n] = -staged[0, :n]
        ready = self.clock.book(self.launch_s + n * self.s_per_token)

        def wait() -> np.ndarray:
            delay = ready - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            return out[:, :n].copy()

        if InFlight is None:
            return wait
        return InFlight(wait, lambda: time.perf_counter() >= ready)

    def launch_packed(
        self, batch: PackedBatch, outputs: list[str]
    ) -> Callable[[], dict[str, np.ndarray]]:
        n = batch.total_tokens
        tokens = batch.tokens
        columns = [tokens["input_ids"], tokens.get("token_type_ids", np.zeros(n, np.int64))]
        wait = self._start(columns, n)
        return _then(wait, lambda logits: dict(zip(OUTPUTS, logits, strict=True)))

    def launch(
        self, inputs: Mapping[str, np.ndarray], outputs: list[str]
    ) -> Callable[[], dict[str, np.ndarray]]:
        if self.packing is not None:
            batch, fill = pack([inputs], self.packing), self.packing.fill
            wait_packed = self.launch_packed(batch, outputs)
            return _then(wait_packed, lambda out: unpack(out, batch, fill)[0])
        ids = np.asarray(inputs["input_ids"])
        shape = ids.shape
        columns = [np.asarray(inputs[name]).reshape(-1) for name in INPUTS if name in inputs]
        wait = self._start(columns, ids.size)
        return _then(
            wait, lambda logits: {k: v.reshape(shape) for k, v in zip(OUTPUTS, logits, strict=True)}
        )

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return self.launch(inputs, outputs)()


class StandInBackend(Backend):
    name = "bertserve_standin"
    default_model_filename = ""

    def __init__(self) -> None:
        self.clocks: dict[str, _Clock] = {}

    def autocomplete(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        options: Mapping[str, str] | None = None,
    ) -> None:
        autocomplete_io(config, *_specs(), default_max_batch_size(options))
        if ModelParameters(config).boolean("packing", False):
            for tensor in config.input:
                tensor.allow_ragged_batch = True

    def validate(self, config: model_config_pb2.ModelConfig, model_path: Path) -> None:
        check_io(config, *_specs())

    def load(
        self,
        config: model_config_pb2.ModelConfig,
        model_path: Path,
        device: Device,
        context: LoadContext,
    ) -> ModelInstance:
        clock = self.clocks.setdefault(config.name, _Clock())
        params = {k: v.string_value for k, v in config.parameters.items()}
        return StandInInstance(clock, params, config.max_batch_size)


def _specs() -> tuple[list[TensorSpec], list[TensorSpec]]:
    """What the stand-in takes and gives: the GPU engine's tensors, [batch, tokens]."""
    lead = (-1, -1)
    return (
        [TensorSpec(n, "INT64", lead) for n in INPUTS],
        [TensorSpec(n, "FP32", lead) for n in OUTPUTS],
    )

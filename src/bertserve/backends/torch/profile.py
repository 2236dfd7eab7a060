"""One optimization profile of an instance: a (batch, seq) bucket's device buffers, CUDA
graphs and pinned staging slots."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bertserve.backends.base import InFlight

if TYPE_CHECKING:
    import torch

    from bertserve.backends.torch.encoder import QAEncoder
    from bertserve.backends.torch.settings import EngineSettings

__all__ = ["Owner", "Profile", "capture_lock", "run_staged"]


class Owner(Protocol):
    """What a profile (padded or packed) takes from the instance that owns it: the instance
    builds its profiles, so naming the instance's class here would make an import circle."""

    torch_device: torch.device
    encoder: QAEncoder
    stream: Any
    settings: EngineSettings


capture_lock = threading.Lock()


class Profile:
    """One (batch, seq) bucket: static device buffers, two graphs (with and without an
    attention mask), and two pinned host staging slots, so one batch can be filled in while
    the one before it still runs (launches alternate between the slots)."""

    def __init__(self, instance: Owner, batch: int, seq: int) -> None:
        import torch

        self.batch, self.seq = batch, seq
        dev = instance.torch_device
        self.enc = instance.encoder
        self.stream = instance.stream
        pin = dev.type == "cuda"
        self.host_in = torch.zeros((2, 3, batch, seq), dtype=torch.int64, pin_memory=pin)
        self.host_in_np = self.host_in.numpy()
        self.dev_in = torch.zeros((3, batch, seq), dtype=torch.int64, device=dev)
        self.dev_in[1].fill_(1)
        self.host_out = torch.empty((2, 2, batch, seq), dtype=torch.float32, pin_memory=pin)
        self.host_out_np = self.host_out.numpy()
        self.dev_out = {
            dense: torch.empty((2, batch, seq), dtype=torch.float32, device=dev)
            for dense in (True, False)
        }
        # torch.cuda.Event.__new__ carries no annotations (torch 2.13).
        self.done = [torch.cuda.Event(), torch.cuda.Event()] if pin else []  # type: ignore[no-untyped-call]
        self.slot = 0
        self.graphs: dict[bool, Any] = {}
        self.has_types = instance.settings.has_token_types

    def compute(self, dense: bool) -> None:
        """The forward pass on the static buffers (what a graph captures)."""
        ids, mask, types = self.dev_in[0], self.dev_in[1], self.dev_in[2]
        out = self.enc.forward(ids, types if self.has_types else None, None if dense else mask)
        self.dev_out[dense].copy_(out)

    def capture(self, pool: Any) -> None:
        import torch

        for dense in (True, False):
            with torch.cuda.stream(self.stream):
                for _ in range(2):  # warm-up: cuBLAS handles, Triton compiles, SDPA choice
                    self.compute(dense)
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads keep serving (allocating, synchronizing) while this
            # one captures; the default "global" mode would fail their calls or this capture.
            with torch.cuda.graph(
                graph, pool=pool, stream=self.stream, capture_error_mode="thread_local"
            ):
                self.compute(dense)
            self.graphs[dense] = graph
        self.stream.synchronize()

    def replay(self, dense: bool) -> None:
        """Run the forward pass on what dev_in holds (graph when captured)."""
        if dense in self.graphs:
            self.graphs[dense].replay()
        else:
            self.compute(dense)

    def launch(
        self, ids: np.ndarray, mask: np.ndarray | None, types: np.ndarray | None
    ) -> InFlight[np.ndarray]:
        """Pad (n, L) inputs into the next staging slot and start the pass on the stream;
        the returned callable waits and gives the (2, n, L) float32 logits, a view of the
        slot that stays valid until the launch after next on this profile."""
        slot = self.slot
        self.slot ^= 1
        n, length = ids.shape
        h = self.host_in_np[slot]
        h[0, :n, :length] = ids
        h[1, :n, :length] = 1 if mask is None else mask
        h[2, :n, :length] = 0 if types is None else types
        if length < self.seq:
            h[:, :n, length:] = 0
        if n < self.batch:
            h[:, n:] = 0
            h[1, n:, :] = 1  # padding rows attend somewhere: finite garbage, discarded
        dense = length == self.seq and (mask is None or bool(mask.all()))
        out = self.host_out_np[slot, :, :n, :length]
        return run_staged(
            self.stream, self.done[slot] if self.done else None,
            (self.dev_in, self.host_in[slot]), lambda: self.replay(dense),
            (self.host_out[slot], self.dev_out[dense]), out,
        )  # fmt: skip


def run_staged(
    stream: Any,
    done: Any,
    copy_in: tuple[Any, Any],
    compute: Callable[[], None],
    copy_out: tuple[Any, Any],
    out: np.ndarray,
) -> InFlight[np.ndarray]:
    """Copy a staging slot in, compute, copy the result out, on `stream` (None: the CPU, now);
    the pass waits for `done` (the slot's event, which its ready() queries) and gives `out`,
    a view of the slot."""
    (dev_in, host_in), (host_out, dev_out) = copy_in, copy_out
    if stream is None:
        dev_in.copy_(host_in)
        compute()
        host_out.copy_(dev_out)
        return InFlight(lambda: out)
    import torch

    # Stream order keeps the shared device buffers safe: this copy-in lands after the
    # previous pass has read dev_in, and its copy-out before this pass writes dev_out.
    with torch.cuda.stream(stream):
        dev_in.copy_(host_in, non_blocking=True)
        compute()
        host_out.copy_(dev_out, non_blocking=True)
        done.record(stream)

    def wait() -> np.ndarray:
        done.synchronize()
        return out

    return InFlight(wait, done.query)

"""One token bucket of an instance that packs rows: device buffers for up to `tokens`
packed tokens in up to `rows` rows, one CUDA graph, two pinned staging slots.

The whole input of a pass travels in one int64 block, so one host-to-device copy feeds it:
token ids, token types, positions (each token's index in its row), then the row offsets
(rows + 1). Unused row slots repeat the last offset (empty rows): the graph captured once
serves every mix of lengths that fits. Token slots past the last offset belong to no row and
keep what an earlier pass staged there (zeros at first): every value ever staged passed the
id checks, so they index the embeddings safely, and what they compute is never read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bertserve.backends.base import InFlight
from bertserve.backends.torch.names import INPUT_IDS, TOKEN_TYPE_IDS
from bertserve.backends.torch.profile import Owner, run_staged

__all__ = ["PackedProfile"]


class PackedProfile:
    def __init__(self, instance: Owner, tokens: int, rows: int, max_len: int) -> None:
        import torch

        self.tokens, self.rows = tokens, rows
        self.max_len = min(max_len, tokens)
        dev = instance.torch_device
        self.enc = instance.encoder
        self.stream = instance.stream
        self.has_types = instance.settings.has_token_types
        pin = dev.type == "cuda"
        width = 3 * tokens + rows + 1
        self.host_in = torch.zeros((2, width), dtype=torch.int64, pin_memory=pin)
        self.host_in_np = self.host_in.numpy()
        self.dev_in = torch.zeros(width, dtype=torch.int64, device=dev)
        self.host_out = torch.empty((2, 2, tokens), dtype=torch.float32, pin_memory=pin)
        self.host_out_np = self.host_out.numpy()
        self.dev_out = torch.empty((2, tokens), dtype=torch.float32, device=dev)
        # torch.cuda.Event.__new__ carries no annotations (torch 2.13).
        self.done = [torch.cuda.Event(), torch.cuda.Event()] if pin else []  # type: ignore[no-untyped-call]
        self.slot = 0
        self.graph: Any = None

    def compute(self) -> None:
        """The forward pass on the static buffers (what the graph captures)."""
        import torch

        t = self.tokens
        ids, types, positions = self.dev_in[:t], self.dev_in[t : 2 * t], self.dev_in[2 * t : 3 * t]
        cu = self.dev_in[3 * t :].to(torch.int32)
        out = self.enc.forward_packed(
            ids, types if self.has_types else None, positions, cu, self.max_len
        )
        self.dev_out.copy_(out)

    def capture(self, pool: Any) -> None:
        import torch

        # Warm-up on one full-length row: cuBLAS handles, Triton compiles, attention setup.
        self.dev_in[3 * self.tokens + 1 :].fill_(self.max_len)
        with torch.cuda.stream(self.stream):
            for _ in range(2):
                self.compute()
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads keep serving while this one captures (see Profile).
        with torch.cuda.graph(
            graph, pool=pool, stream=self.stream, capture_error_mode="thread_local"
        ):
            self.compute()
        self.graph = graph
        self.stream.synchronize()

    def launch(
        self, tokens: Mapping[str, np.ndarray], positions: np.ndarray, lengths: np.ndarray
    ) -> InFlight[np.ndarray]:
        """Stage packed rows (1-D token arrays, each token's index in its row, row lengths)
        into the next slot and start the pass; the callable waits and gives the (2, n) float32
        logits, a view of the slot that stays valid until the launch after next on this
        profile. Three copies and no fills: a copy this size gives the GIL up, and taking it
        back costs a thread up to a switch interval behind a busy event loop."""
        slot = self.slot
        self.slot ^= 1
        t, n, rows = self.tokens, len(positions), len(lengths)
        h = self.host_in_np[slot]
        h[:n] = tokens[INPUT_IDS]
        types = tokens.get(TOKEN_TYPE_IDS)
        if types is not None:
            h[t : t + n] = types
        elif self.has_types:
            h[t : t + n] = 0
        h[2 * t : 2 * t + n] = positions
        offsets = h[3 * t :]
        offsets[0] = 0
        np.cumsum(lengths, out=offsets[1 : rows + 1])
        offsets[rows + 1 :] = n
        out = self.host_out_np[slot, :, :n]
        return run_staged(
            self.stream, self.done[slot] if self.done else None,
            (self.dev_in, self.host_in[slot]), self._replay,
            (self.host_out[slot], self.dev_out), out,
        )  # fmt: skip

    def _replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.compute()

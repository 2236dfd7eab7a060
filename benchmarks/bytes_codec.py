"""BYTES tensors on the wire (4-byte little-endian length, then the bytes, per element):
bertserve's codec (`bertserve.tensors`) against `tritonclient.utils`'s, side by side.

The issue this answers: bertserve writes its own (de)serialization although tritonclient,
already a dependency, has one. The library is used unless this shows bertserve's faster.
Both run in this one process, interleaved, `--repeat` times; the table shows the best time
per call of each and the ratio. Shapes: the QA pipeline's (a batch of 8 questions or
passages of ~600 bytes), bigger passages, one short text, and many tiny elements.

    python benchmarks/bytes_codec.py [--repeat 7] [--number 2000]
"""

from __future__ import annotations

import argparse
import platform
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from bertserve.tensors import deserialize_bytes, serialize_bytes
from harness import cpu_name, markdown_table, package_versions

#: (elements, bytes per element) of each case.
CASES = ((8, 600), (64, 2000), (1, 30), (1024, 16))


def _best_us(call: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def measure(number: int, repeat: int) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for count, size in CASES:
        texts = [bytes([65 + i % 26]) * size for i in range(count)]
        array = np.array(texts, dtype=np.object_).reshape(count, 1)
        wire = serialize_bytes(array)
        # Same bytes either way, and both read back what was written.
        assert serialize_byte_tensor(array).item() == wire
        assert list(deserialize_bytes(wire, count)) == list(deserialize_bytes_tensor(wire))
        ours_out = _best_us(lambda: serialize_bytes(array), number, repeat)  # noqa: B023
        lib_out = _best_us(lambda: serialize_byte_tensor(array), number, repeat)  # noqa: B023
        ours_in = _best_us(lambda: deserialize_bytes(wire, count), number, repeat)  # noqa: B023
        lib_in = _best_us(lambda: deserialize_bytes_tensor(wire), number, repeat)  # noqa: B023
        rows.append(
            (
                f"{count} x {size} B",
                f"{ours_out:.2f}",
                f"{lib_out:.2f}",
                f"{lib_out / ours_out:.2f}",
                f"{ours_in:.2f}",
                f"{lib_in:.2f}",
                f"{lib_in / ours_in:.2f}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timing repeats (best is kept)")
    parser.add_argument("--number", type=int, default=2000, help="calls per repeat")
    args = parser.parse_args()
    rows = measure(args.number, args.repeat)
    versions = package_versions(["numpy", "tritonclient"])
    print(
        f"{datetime.now(UTC):%Y-%m-%d}, {cpu_name()}, Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    print(
        markdown_table(
            (
                "tensor",
                "serialize: bertserve us",
                "tritonclient us",
                "ratio",
                "deserialize: bertserve us",
                "tritonclient us",
                "ratio",
            ),
            rows,
            (False, True, True, True, True, True, True),
        )
    )


if __name__ == "__main__":
    main()

"""Write a realistic BERT QA workload as perf_analyzer `--input-data` JSON, with a fixed seed.

    python benchmarks/squad_workload.py --out squad-384.json            # rows padded to 384
    python benchmarks/squad_workload.py --out squad-own.json --pad-to 0 # each row its length

Sequence lengths follow SQuAD v1.1 dev as MLPerf's BERT benchmark feeds it (question + context
+ 3 special tokens, windows of at most 384 tokens, run_squad's doc stride of 128 tokens
between window starts): mean about 156 tokens, about 2.5% of questions with a context longer
than one window (a 384-token window, then shorter ones), a long tail up to the cap. The
SQuAD files are not available here, so the lengths are drawn from log-normal fits: question
tokens median 13 (sigma 0.35, 4..64), context tokens median 117 (sigma 0.55): mean 156,
2.6% of questions split (MLPerf: 10,833 windows of 10,570 questions). Token ids are
drawn inside the BERT-base-cased vocabulary (1000..28995), with [CLS] = 101 and [SEP] = 102
where BERT puts them and token types 0 for the question, 1 for the context.

With `--pad-to 384` (the default) every row is 384 tokens with its attention mask marking
its real length: the same file drives a padded engine (which computes all 384) and a packing
one (which trims each row to its mask), at any perf_analyzer `-b`. With `--pad-to 0` each row
has its own shape: requests of different lengths, no client-side padding (`-b 1`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["draw_lengths", "workload_rows", "main"]

MAX_LEN = 384
STRIDE = 128  # run_squad: tokens between the starts of consecutive windows
CLS, SEP = 101, 102
VOCAB = (1000, 28996)


def draw_lengths(questions: int, seed: int = 0) -> np.ndarray:
    """Window lengths (tokens, specials included) of `questions` SQuAD-like questions."""
    rng = np.random.default_rng(seed)
    q = np.clip(np.round(rng.lognormal(np.log(13), 0.35, questions)), 4, 64).astype(int)
    c = np.maximum(np.round(rng.lognormal(np.log(117), 0.55, questions)), 8).astype(int)
    lengths: list[int] = []
    for q_len, c_len in zip(q, c, strict=True):
        room = MAX_LEN - q_len - 3
        start = 0
        while True:
            take = min(room, c_len - start)
            lengths.append(q_len + take + 3)
            if start + take >= c_len:
                break
            start += STRIDE
    return np.asarray(lengths)


def workload_rows(rows: int, seed: int = 0, pad_to: int = MAX_LEN) -> list[dict[str, np.ndarray]]:
    """`rows` windows as input_ids / attention_mask / token_type_ids arrays (int64)."""
    rng = np.random.default_rng(seed + 1)
    lengths = draw_lengths(rows, seed)[:rows]
    out = []
    for length in lengths:
        q_len = int(rng.integers(4, min(64, length - 4) + 1)) if length > 8 else 1
        width = pad_to or length
        ids = np.zeros(width, dtype=np.int64)
        ids[:length] = rng.integers(*VOCAB, size=length)
        ids[0], ids[q_len + 1], ids[length - 1] = CLS, SEP, SEP
        mask = np.zeros(width, dtype=np.int64)
        mask[:length] = 1
        types = np.zeros(width, dtype=np.int64)
        types[q_len + 2 : length] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    return out


def to_perf_analyzer(rows: list[dict[str, np.ndarray]], names: list[str]) -> dict:
    return {
        "data": [{n: {"content": r[n].tolist(), "shape": [len(r[n])]} for n in names} for r in rows]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rows", type=int, default=2048, help="distinct windows (default 2048)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pad-to", type=int, default=MAX_LEN, help="0: each row its length")
    parser.add_argument(
        "--inputs", default="input_ids,attention_mask,token_type_ids",
        help="tensors to write (DistilBERT: input_ids,attention_mask)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    rows = workload_rows(args.rows, args.seed, args.pad_to)
    lengths = np.array([int(r["attention_mask"].sum()) for r in rows])
    args.out.write_text(json.dumps(to_perf_analyzer(rows, args.inputs.split(","))))
    print(
        f"{args.out}: {len(rows)} rows, mean {lengths.mean():.1f} tokens, median "
        f"{np.median(lengths):.0f}, p90 {np.percentile(lengths, 90):.0f}, "
        f"{(lengths == MAX_LEN).mean():.1%} at {MAX_LEN}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

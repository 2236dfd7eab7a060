"""`bertserve build`: Hugging Face QA checkpoints -> a ready Triton-layout model repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "Build a model repository from BERT question-answering checkpoints: ONNX export, "
    "fusion, INT8 quantization, accuracy checked against transformers."
)

_PRESETS = ("tiny", "distilbert", "bert-base", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Writes REPO/<model>/config.pbtxt (no input/output: the server completes them), "
        "REPO/<model>/1/model.onnx, REPO/<model>/1/tokenizer/ and REPO/<model>/1/"
        "build_report.json (accuracy against transformers fp32), and REPO/<model>_qa/, a "
        "question-answering pipeline over it (docs/qa.md). Models are built in a hidden "
        "REPO/.bertserve-build-* folder and moved into place only if every one passes. "
        "Progress goes to stderr, the summary to stdout."
    )
    parser.add_argument(
        "--preset",
        required=True,
        choices=_PRESETS,
        help="what to build: tiny (2-layer test model), distilbert, bert-base, "
        "or seed (the reference repository's models)",
    )
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        metavar="REPO",
        help="model repository folder (created if missing)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        metavar="hub|random|DIR",
        help="hub: download the real checkpoints; random: seeded random weights "
        "of the exact architecture (same cost, meaningless answers); DIR: a "
        "save_pretrained folder, or a folder with one subfolder per "
        "architecture (bert-base/, distilbert/). Default: random for tiny, "
        "hub otherwise",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=(),
        metavar="NAME",
        help="build only these models of the preset",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="sequence length of the checks and fixed-shape engines",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default=None,
        help="build one CPU variant of this precision per architecture",
    )
    parser.add_argument("--max-batch-size", type=int, default=None)
    parser.add_argument(
        "--instances", type=int, default=None, help="instance_group count of every model"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights")
    parser.add_argument(
        "--force", action="store_true", help="replace models the repository already holds"
    )
    parser.add_argument(
        "--no-qa-pipeline",
        dest="qa_pipelines",
        action="store_false",
        help="do not write the `<model>_qa` question-answering pipeline beside each model",
    )


def run(args: argparse.Namespace) -> int:
    from bertserve.builder.extra import missing_build_extra

    missing = missing_build_extra("build")
    if missing:
        print(missing, file=sys.stderr)
        return 2

    from bertserve.builder import BuildError, build_preset
    from bertserve.builder.progress import StageLines
    from bertserve.tables import make_console

    try:
        outcome = build_preset(
            args.preset,
            args.output,
            StageLines(make_console(stderr=True)),
            weights=args.weights,
            only=tuple(args.only),
            seq_len=args.seq_len,
            precision=args.precision,
            max_batch_size=args.max_batch_size,
            instances=args.instances,
            seed=args.seed,
            force=args.force,
            qa_pipelines=args.qa_pipelines,
        )
    except BuildError as exc:
        print(f"bertserve build: {exc}", file=sys.stderr)
        return 1
    print(outcome.summary())
    return 0

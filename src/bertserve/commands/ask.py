"""`bertserve ask`: one question about one passage, answered by a served QA pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bertserve.qa.client import AnswerClient

__all__ = ["HELP", "add_arguments", "add_url_argument", "run"]

HELP = "Ask a served QA pipeline a question about a passage and print the answer and its span."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", help='the question, e.g. "Who designed the lighthouse?"')
    parser.add_argument(
        "--context",
        "-c",
        required=True,
        metavar="FILE|TEXT",
        help="the passage: a UTF-8 text file's path, or the text itself",
    )
    add_url_argument(parser)
    parser.add_argument(
        "-m", "--model", required=True, help="the QA pipeline model (backend bertserve_qa)"
    )
    parser.add_argument("-x", "--model-version", default="", help="version (default: latest)")


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    """`-u/--url`, the QA client commands' (ask, eval) server address."""
    parser.add_argument(
        "-u",
        "--url",
        default="localhost:8000",
        metavar="HOST:PORT",
        help="the server's HTTP address (default: localhost:8000)",
    )


def _context(value: str) -> str:
    path = Path(value)
    try:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    except OSError:  # a long text is no file name
        pass
    return value


def run(args: argparse.Namespace) -> int:
    from bertserve.qa.client import RANDOM_WEIGHTS_WARNING, AnswerClient, ClientError

    try:
        context = _context(args.context)
    except UnicodeDecodeError:
        print(f"error: {args.context} is not UTF-8 text", file=sys.stderr)
        return 2
    try:
        with AnswerClient(args.url, args.model, args.model_version) as client:
            random_models = random_weights(client)
            [answer] = client.ask([args.question], [context])
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for model in random_models:
        print(RANDOM_WEIGHTS_WARNING.format(model=model), file=sys.stderr)
    if answer.is_impossible:
        print("answer: (none: the model finds no answer to this question in the passage)")
    else:
        print(f"answer: {answer.text}")
        print(f"span:   characters {answer.start_char}..{answer.end_char} of the passage")
        print(f"        ...{_in_context(context, answer.start_char, answer.end_char)}...")
    print(f"score:  {answer.score:.4f}")
    return 0


def _in_context(context: str, start: int, end: int, margin: int = 40) -> str:
    before = context[max(0, start - margin) : start]
    after = context[end : end + margin]
    return " ".join(f"{before}[{context[start:end]}]{after}".split())


def random_weights(client: AnswerClient) -> list[str]:
    """Models declaring random weights; a config that cannot be read is reported, not fatal."""
    from bertserve.qa.client import ClientError

    try:
        return client.random_weights()
    except ClientError as exc:
        print(f"note: cannot check whether the weights are random ({exc})", file=sys.stderr)
        return []

"""`bertserve eval`: SQuAD exact match and F1 of served QA pipelines, and how variants agree."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.commands.ask import add_url_argument, random_weights

if TYPE_CHECKING:
    from rich.console import Console

    from bertserve.qa.evaluation import Comparison, VariantResult
    from bertserve.qa.squad import Example

__all__ = ["HELP", "add_arguments", "describe", "evaluate", "print_scores", "run"]

HELP = (
    "Score served QA pipelines on SQuAD v1.1/v2.0 JSON (official EM/F1) and compare variants: "
    "accuracy, throughput and answer agreement with the first."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="SQuAD v1.1 or v2.0 JSON (default: the small sample shipped with bertserve)",
    )
    models = parser.add_mutually_exclusive_group(required=True)
    models.add_argument("-m", "--model", help="the QA pipeline model to score")
    models.add_argument(
        "--compare",
        nargs="+",
        metavar="MODEL",
        help="QA pipelines to run on the same questions; the first is the reference",
    )
    add_url_argument(parser)
    parser.add_argument(
        "-b", "--batch-size", type=int, default=8, help="pairs per request (default: 8)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight (default: 4)"
    )
    parser.add_argument("--limit", type=int, default=0, help="score the first N questions only")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="write scores, comparisons and every prediction as JSON",
    )


def run(args: argparse.Namespace) -> int:
    from bertserve.qa.client import ClientError
    from bertserve.qa.evaluation import compare
    from bertserve.qa.squad import load_squad, sample_path
    from bertserve.tables import make_console

    if args.batch_size < 1 or args.concurrency < 1 or args.limit < 0:
        print("error: --batch-size and --concurrency must be >= 1, --limit >= 0", file=sys.stderr)
        return 2
    data = args.data or sample_path()
    try:
        version, examples = load_squad(data)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        examples = examples[: args.limit]
    console = make_console()
    console.print(f"SQuAD {version}: {describe(examples)} from {data}", markup=False)
    try:
        results = evaluate(
            console,
            args.url,
            args.compare or [args.model],
            examples,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
        )
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    comparisons = compare(results)
    print_scores(console, comparisons)
    if args.output:
        _write(args.output, str(data), version, comparisons)
        print(f"wrote {args.output}")
    return 0


def evaluate(
    console: Console,
    url: str,
    models: Sequence[str],
    examples: Sequence[Example],
    *,
    batch_size: int,
    concurrency: int,
) -> list[VariantResult]:
    """Ask every model every question (with a progress bar) and score the answers; a
    ClientError names the model and what the server said."""
    from bertserve.progress_bar import CountBar
    from bertserve.qa.client import RANDOM_WEIGHTS_WARNING, AnswerClient
    from bertserve.qa.evaluation import VariantResult
    from bertserve.qa.metrics import score_predictions

    questions = [e.question for e in examples]
    contexts = [e.context for e in examples]
    results: list[VariantResult] = []
    for model in models:
        with AnswerClient(url, model, concurrency=concurrency) as client:
            random_models = random_weights(client)
            # Warm-up: the first requests of a model may pay for lazy initialisation.
            client.ask(questions[:batch_size], contexts[:batch_size])
            with CountBar(console, len(questions), f"{model}: questions answered") as bar:
                answers = client.ask_all(questions, contexts, batch_size, bar.advance)
        for name in random_models:
            print(RANDOM_WEIGHTS_WARNING.format(model=name), file=sys.stderr)
        predictions = {
            e.id: ("" if a.is_impossible else a.text)
            for e, a in zip(examples, answers.answers, strict=True)
        }
        results.append(
            VariantResult(
                model=model,
                scores=score_predictions(examples, predictions),
                predictions=predictions,
                seconds=answers.seconds,
                random_weights=bool(random_models),
            )
        )
    return results


def describe(examples: Sequence[Example]) -> str:
    """How many questions, e.g. "23 questions (21 answerable, 2 unanswerable)"."""
    unanswerable = sum(e.is_impossible for e in examples)
    return (
        f"{len(examples)} questions ({len(examples) - unanswerable} answerable, "
        f"{unanswerable} unanswerable)"
    )


def print_scores(console: Console, comparisons: Sequence[Comparison]) -> None:
    """The scores table, one sentence per compared variant, and the random-weights caveat."""
    from bertserve.qa.evaluation import score_table, summary_lines
    from bertserve.tables import print_table

    print_table(console, *score_table(comparisons))
    for line in summary_lines(comparisons):
        console.print(line, markup=False, highlight=False)
    if any(c.result.random_weights for c in comparisons):
        console.print(
            "(random weights: EM/F1 and agreement say nothing about real accuracy)",
            markup=False,
            highlight=False,
        )


def _write(path: Path, data: str, version: str, comparisons: list[Comparison]) -> None:
    from dataclasses import asdict

    document = {
        "data": data,
        "squad_version": version,
        "variants": [
            {
                "model": c.result.model,
                "random_weights": c.result.random_weights,
                "scores": asdict(c.result.scores),
                "seconds": c.result.seconds,
                "questions_per_second": c.result.questions_per_second,
                "speedup": c.speedup,
                "same_answers_percent": c.same_answers,
                "delta_exact": c.delta_exact,
                "delta_f1": c.delta_f1,
                "predictions": c.result.predictions,
            }
            for c in comparisons
        ],
    }
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

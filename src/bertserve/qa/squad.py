"""SQuAD v1.1 / v2.0 JSON files -> a flat list of questions with their gold answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Example", "load_squad", "parse_squad", "passage_path", "sample_path"]


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    title: str
    question: str
    context: str
    answers: tuple[str, ...]  # gold texts; empty when the question is unanswerable
    answer_starts: tuple[int, ...]
    is_impossible: bool


def sample_path() -> Path:
    """The small SQuAD-format sample shipped with bertserve (original passages)."""
    return Path(str(resources.files("bertserve") / "data" / "squad_sample.json"))


def passage_path() -> Path:
    """A short passage shipped with bertserve for `bertserve ask` (original text)."""
    return Path(str(resources.files("bertserve") / "data" / "passage.txt"))


def load_squad(path: Path) -> tuple[str, list[Example]]:
    """(version, examples) from a SQuAD JSON file; raises ValueError naming what is wrong."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read SQuAD file '{path}': {exc}") from None
    return parse_squad(document, str(path))


def parse_squad(document: Any, source: str = "<data>") -> tuple[str, list[Example]]:
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ValueError(f"{source}: not SQuAD JSON (expected an object with a 'data' list)")
    version = str(document.get("version", "1.1"))
    examples: list[Example] = []
    for article in document["data"]:
        title = str(article.get("title", ""))
        for paragraph in article.get("paragraphs", []):
            context = paragraph["context"]
            for qa in paragraph.get("qas", []):
                impossible = bool(qa.get("is_impossible", False))
                answers = [] if impossible else qa.get("answers", [])
                examples.append(
                    Example(
                        id=str(qa["id"]),
                        title=title,
                        question=qa["question"],
                        context=context,
                        answers=tuple(a["text"] for a in answers),
                        answer_starts=tuple(int(a.get("answer_start", -1)) for a in answers),
                        is_impossible=impossible,
                    )
                )
    if not examples:
        raise ValueError(f"{source}: holds no questions")
    return version, examples

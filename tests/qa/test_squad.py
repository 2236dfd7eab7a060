from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertserve.qa.squad import load_squad, parse_squad, sample_path


def test_sample_is_valid_squad_v2() -> None:
    version, examples = load_squad(sample_path())
    assert version == "v2.0"
    assert len(examples) >= 20
    assert len({e.id for e in examples}) == len(examples)
    assert sum(e.is_impossible for e in examples) >= 1
    assert len({e.question.split()[0] for e in examples}) >= 4  # who/what/when/how/why...
    for example in examples:
        assert example.is_impossible == (not example.answers)
        for text, start in zip(example.answers, example.answer_starts, strict=True):
            assert example.context[start : start + len(text)] == text


def test_v1_file_without_is_impossible(tmp_path: Path) -> None:
    doc = {
        "version": "1.1",
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "Cats sleep a lot.",
                        "qas": [
                            {
                                "id": "1",
                                "question": "Who sleeps?",
                                "answers": [{"text": "Cats", "answer_start": 0}],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(doc))
    version, [example] = load_squad(path)
    assert version == "1.1"
    assert example.answers == ("Cats",) and not example.is_impossible


def test_impossible_question_ignores_plausible_answers() -> None:
    _, examples = load_squad(sample_path())
    impossible = [e for e in examples if e.is_impossible]
    assert all(e.answers == () for e in impossible)


@pytest.mark.parametrize("document", [[], {"data": 3}, {"data": []}])
def test_not_squad_is_refused(document: object) -> None:
    with pytest.raises(ValueError):
        parse_squad(document)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read SQuAD file"):
        load_squad(tmp_path / "missing.json")

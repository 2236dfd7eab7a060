"""Fixtures for builder tests: tiny checkpoints written with save_pretrained, as a user's
fine-tuned folder would be, and one tiny repository built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bertserve.builder import BuildOutcome, build_preset

TINY_BERT: dict[str, Any] = {
    "vocab_size": 1024,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}
TINY_DISTILBERT: dict[str, Any] = {
    "vocab_size": 1024,
    "dim": 32,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dim": 64,
    "max_position_embeddings": 512,
}


def _save(folder: Path, model: object) -> Path:
    from bertserve.builder.vocabulary import write_generated_tokenizer

    model.save_pretrained(str(folder))  # type: ignore[attr-defined]
    write_generated_tokenizer(folder, 1024, 512)
    return folder


@pytest.fixture(scope="session")
def bert_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(1)
    model = BertForQuestionAnswering(BertConfig(**TINY_BERT))
    return _save(tmp_path_factory.mktemp("ckpt") / "bert", model)


@pytest.fixture(scope="session")
def distilbert_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    torch.manual_seed(2)
    model = DistilBertForQuestionAnswering(DistilBertConfig(**TINY_DISTILBERT))
    return _save(tmp_path_factory.mktemp("ckpt") / "distilbert", model)


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> BuildOutcome:
    return build_preset("tiny", tmp_path_factory.mktemp("repo"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: 'the repository is as it was' made checkable."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

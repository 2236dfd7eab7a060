"""QA fixtures (helpers live in qa_toys.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from tests.qa.qa_toys import make_tokenizer, steered_table, write_repository


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return make_tokenizer()


@pytest.fixture
def repo(tmp_path: Path, tokenizer: Tokenizer) -> Path:
    """A toy QA model that answers "paraffin" and the pipeline `qa` over it (windows of 128
    tokens, buckets 32 and 64)."""
    return write_repository(
        tmp_path,
        tokenizer,
        steered_table(tokenizer, "paraffin", "paraffin"),
        {"max_seq_len": "128", "doc_stride": "32", "buckets": "32,64"},
    )

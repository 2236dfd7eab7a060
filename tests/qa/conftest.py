"""QA fixtures (helpers live in qa_toys.py)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from tests.qa.qa_toys import make_tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return make_tokenizer()

"""TokenRanges: a request's token ids read against the tables the config declares, in one
reduction, for every integer width a config may give its inputs."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from bertserve.engine.validation import TokenRanges
from bertserve.errors import InvalidInput


def _ranges(vocab: int, types: int = 2) -> TokenRanges:
    text = (
        f'name: "m" parameters {{ key: "vocab_size" value {{ string_value: "{vocab}" }} }} '
        f'parameters {{ key: "type_vocab_size" value {{ string_value: "{types}" }} }}'
    )
    ranges = TokenRanges.from_config(text_format.Parse(text, model_config_pb2.ModelConfig()))
    assert ranges is not None
    return ranges


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "uint16"])
@pytest.mark.parametrize("vocab", [100, 128, 30522])
def test_every_id_in_the_vocabulary_passes_and_none_outside(dtype: str, vocab: int) -> None:
    info = np.iinfo(dtype)
    top = min(vocab - 1, info.max)
    _ranges(vocab).check({"input_ids": np.array([[0, top]], dtype)}, "m")
    if vocab - 1 < info.max:
        with pytest.raises(
            InvalidInput, match=f"holds {vocab} at \\[0, 1\\], outside 0..{vocab - 1}"
        ):
            _ranges(vocab).check({"input_ids": np.array([[0, vocab]], dtype)}, "m")
    if info.min < 0:
        # read unsigned, int8's -5 is 251: below a vocabulary of 30,522, yet no id
        with pytest.raises(InvalidInput, match="holds -5 at \\[0, 1\\]"):
            _ranges(vocab).check({"input_ids": np.array([[3, -5]], dtype)}, "m")


def test_a_negative_token_type_of_a_narrow_integer_is_refused() -> None:
    with pytest.raises(InvalidInput, match="'token_type_ids' holds -1"):
        _ranges(30522).check({"token_type_ids": np.array([[0, -1]], np.int8)}, "m")

"""One client's bad values fail that client alone: token ids the model's tables don't hold are
a 400 naming the input and the value, checked before the request joins a batch; and for any
model, a batch that fails anyway is run again one request at a time, so only the request at
fault fails. Over HTTP and gRPC."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from bertserve.server import Server
from tests.conftest import TINY, copy_model
from tests.frontends.conftest import running, settings, url
from tests.frontends.protocols import PROTOCOLS, Client, feed
from tests.frontends.together import Together

# A 300 ms batching window: requests sent together share a batch.
_BATCHING = (
    'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    "dynamic_batching { max_queue_delay_microseconds: 300000 }\n"
)
_PARAMETER = 'parameters {{ key: "{}" value {{ string_value: "{}" }} }}\n'
RANGES = {"vocab_size": 1024, "type_vocab_size": 2, "max_position_embeddings": 512}


@pytest.fixture(scope="module")
def models(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """'ranged' knows its tables' sizes (as `bertserve build` writes them); 'unranged' is a
    model that doesn't, where only the safety net stands between clients."""
    repo = tmp_path_factory.mktemp("isolation") / "repo"
    ranges = "".join(_PARAMETER.format(k, v) for k, v in RANGES.items())
    copy_model(tiny_repo, TINY, repo, "ranged", _BATCHING + ranges)
    copy_model(tiny_repo, TINY, repo, "unranged", _BATCHING)
    with running(settings(repo)) as server:
        yield server


def _with(**changes: np.ndarray) -> dict[str, np.ndarray]:
    data = feed()
    data.update(changes)
    return data


def _id_at(index: int, value: int) -> dict[str, np.ndarray]:
    data = feed()
    data["input_ids"][0, index] = value
    return data


# (case, inputs, the words of the 400)
BAD_VALUES = [
    ("id at the vocabulary size", _id_at(3, 1024),
     "input 'input_ids' holds 1024 at [0, 3], outside 0..1023 (vocab_size of model 'ranged')"),
    ("negative id", _id_at(0, -1), "input 'input_ids' holds -1 at [0, 0], outside 0..1023"),
    ("token type 2", _with(token_type_ids=np.full((1, 16), 2)),
     "input 'token_type_ids' holds 2 at [0, 0], outside 0..1 (type_vocab_size"),
    ("longer than the positions", feed(seq=513),
     "has 513 tokens and model 'ranged' holds 512 positions (max_position_embeddings)"),
    ("shapes disagree", _with(attention_mask=np.ones((1, 15), np.int64)),
     "inputs 'input_ids' [1, 16] and 'attention_mask' [1, 15] of model 'ranged' must have"),
]  # fmt: skip


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("case", "data", "message"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_values_outside_the_models_tables_are_a_400_naming_them(
    models: Server, protocol: str, case, data, message
) -> None:
    with Client(protocol, url(models, protocol)) as client:
        with pytest.raises(InferenceServerException) as info:
            client.infer("ranged", client.inputs(data))
        assert info.value.status() == client.status(http=400, grpc="INVALID_ARGUMENT")
        assert message in str(info.value.message())
        client.infer("ranged", client.inputs(feed()))


def _start_logits(server: Server, model: str, protocol: str, data: dict[str, np.ndarray]
                  ) -> Callable[[], object]:  # fmt: skip
    def call() -> object:
        with Client(protocol, url(server, protocol)) as client:
            return client.infer(model, client.inputs(data)).as_numpy("start_logits")

    return call


def _mixed() -> list[tuple[str, dict]]:
    """Six good requests over both protocols, and between them one with an id the model's
    table does not hold."""
    good = [(PROTOCOLS[i % 2], feed(seed=i)) for i in range(6)]
    bad = ("http", _with(input_ids=np.full((1, 16), 5000, np.int64)))
    return [*good[:3], bad, *good[3:]]


@pytest.mark.parametrize("model", ["ranged", "unranged"])
def test_one_clients_bad_values_do_not_fail_the_others_in_its_batch(
    models: Server, model: str
) -> None:
    with Client("grpc", url(models, "grpc")) as client:
        before = client.statistics(model).model_stats[0]
        alone = {
            i: client.infer(model, client.inputs(d)).as_numpy("start_logits")
            for i, (_, d) in enumerate(_mixed())
            if i != 3
        }
        calls = [_start_logits(models, model, p, d) for p, d in _mixed()]
        outcomes = Together(calls).by_index()
        after = client.statistics(model).model_stats[0]
    for i, outcome in enumerate(outcomes):
        if i == 3:
            assert isinstance(outcome, InferenceServerException), outcome
            # with the tables' sizes the request is refused before it is batched; without,
            # the runtime's own error reaches that client, and only that client
            assert outcome.status() == ("400" if model == "ranged" else "500"), outcome
        else:
            np.testing.assert_array_equal(outcome, alone[i])
    assert after.inference_stats.success.count - before.inference_stats.success.count == 12
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1

"""The torch engine's packed path (variable-length rows, token buckets) on CPU in float32,
against transformers row by row; the same path with CUDA graphs where a GPU is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from bertserve.backends.base import Device, LoadContext  # noqa: E402
from bertserve.backends.packing import pack  # noqa: E402
from bertserve.backends.torch import TorchBackend  # noqa: E402
from bertserve.backends.torch.buckets import (  # noqa: E402
    default_token_buckets,
    pick_token_bucket,
    plan_token_chunks,
    row_capacity,
)
from bertserve.backends.torch.encoder import EncoderOptions, load_encoder  # noqa: E402
from bertserve.errors import ConfigError, InvalidInput  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
OUTPUTS = ["start_logits", "end_logits"]


def _rows(rng: np.random.Generator, lengths: list[int], width: int, kind: str) -> dict:
    """One request: rows of the given lengths, right-padded to `width`."""
    n = len(lengths)
    ids = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64)
    for r, length in enumerate(lengths):
        ids[r, :length] = rng.integers(1, 100, size=length)
        mask[r, :length] = 1
        types[r, length // 2 : length] = 1
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if kind == "distilbert":
        feed.pop("token_type_ids")
    return feed


def _reference_rows(model: torch.nn.Module, feed: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """transformers fp32 on each row alone, at its own length (no padding anywhere)."""
    out = []
    for r in range(feed["input_ids"].shape[0]):
        n = int(feed["attention_mask"][r].sum())
        row = {k: torch.from_numpy(v[r : r + 1, :n]) for k, v in feed.items()}
        with torch.no_grad():
            o = model(**row)
        out.append((o.start_logits[0].numpy(), o.end_logits[0].numpy()))
    return out


def _load(version_dir: Path, params: dict[str, str], mbs: int = 8, device=None):
    text = f'name: "m" backend: "bertserve_torch" max_batch_size: {mbs} '
    for k, v in {"packing": "true", **params}.items():
        text += f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }} '
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    backend = TorchBackend()
    backend.autocomplete(config, version_dir)
    inst = backend.load(config, version_dir, device or Device("cpu"), LoadContext("m", 1))
    return config, inst


# ---- bucket arithmetic ----------------------------------------------------------------------
def test_default_token_buckets_step_by_at_most_half() -> None:
    buckets = default_token_buckets(32768)
    assert buckets[:4] == (128, 256, 384, 512) and buckets[-1] == 32768
    assert all(b / a <= 1.5 for a, b in zip(buckets[3:], buckets[4:], strict=False))
    assert default_token_buckets(1536)[-1] == 1536
    assert default_token_buckets(100) == (128,)


@pytest.mark.parametrize("budget", [2048, 5000, 32768, 65536])
def test_the_budget_s_top_octave_is_bucketed_in_sixteenths(budget: int) -> None:
    buckets = default_token_buckets(budget)
    top = [b for b in buckets if b >= budget // 2]
    assert top[-1] == budget
    assert all(0 < b - a <= budget // 16 + 64 for a, b in zip(top, top[1:], strict=False))
    assert all(b % 64 == 0 for b in top[:-1])
    # a batch three 10k-token requests long computes under 3% more than its tokens
    if budget == 32768:
        assert pick_token_bucket(30_000, 192, buckets, 256) == 30720


def test_pick_token_bucket_needs_room_for_tokens_and_rows() -> None:
    buckets = (128, 256, 512)
    assert pick_token_bucket(100, 1, buckets, max_rows=64) == 128
    assert pick_token_bucket(129, 2, buckets, max_rows=64) == 256
    # 20 rows of 5 tokens: 128 tokens hold only 128 // 16 = 8 rows
    assert row_capacity(128, 64) == 8
    assert pick_token_bucket(100, 20, buckets, max_rows=64) == 512


def test_plan_token_chunks_respects_both_limits() -> None:
    assert plan_token_chunks([], 10, 4) == []
    assert plan_token_chunks([4, 4, 4], 10, 4) == [range(0, 2), range(2, 3)]
    assert plan_token_chunks([1] * 5, 100, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    lengths = list(np.random.default_rng(0).integers(1, 50, size=200))
    chunks = plan_token_chunks(lengths, 120, 7)
    assert [c.start for c in chunks] == [0] + [c.stop for c in chunks[:-1]]
    assert chunks[-1].stop == 200
    assert all(sum(lengths[c.start : c.stop]) <= 120 and len(c) <= 7 for c in chunks)


# ---- the encoder's packed pass vs transformers ----------------------------------------------
def test_packed_forward_matches_transformers_row_by_row(checkpoint: tuple) -> None:
    kind, version_dir, model = checkpoint
    enc = load_encoder(version_dir, "model.safetensors", EncoderOptions(precision="fp32"), "cpu")
    lengths = [7, 16, 3, 11]
    feed = _rows(np.random.default_rng(1), lengths, 16, kind)
    batch = pack([feed], _load(version_dir, {"seq_buckets": "16"})[1].packing)
    ends = np.cumsum(lengths)
    positions = np.concatenate([np.arange(n) for n in lengths])
    # Two slack tokens past the last row, as a token bucket has: they must not disturb it.
    ids = np.concatenate([batch.tokens["input_ids"], [5, 9]])
    types = batch.tokens.get("token_type_ids")
    with torch.no_grad():
        logits = enc.forward_packed(
            torch.from_numpy(ids),
            None if types is None else torch.from_numpy(np.concatenate([types, [0, 0]])),
            torch.from_numpy(np.concatenate([positions, [0, 0]])),
            torch.tensor([0, *ends], dtype=torch.int32),
            16,
        ).numpy()
    assert logits.shape == (2, sum(lengths) + 2)
    for r, (start, end) in enumerate(_reference_rows(model, feed)):
        lo = ends[r] - lengths[r]
        np.testing.assert_allclose(logits[0, lo : ends[r]], start, atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(logits[1, lo : ends[r]], end, atol=2e-4, rtol=1e-4)


# ---- the instance -----------------------------------------------------------------------------
def test_packing_config_marks_inputs_ragged_and_builds_token_buckets(checkpoint: tuple) -> None:
    _, version_dir, _ = checkpoint
    config, inst = _load(version_dir, {"seq_buckets": "32", "max_tokens": "256"})
    assert all(i.allow_ragged_batch for i in config.input)
    assert inst.batch_buckets is None
    assert sorted(inst.packed) == [128, 256]
    assert inst.packing is not None
    assert inst.packing.max_tokens == 256 and inst.packing.max_rows == 8
    assert inst.packing.length_input == "attention_mask"


def test_run_on_a_packing_instance_matches_transformers(checkpoint: tuple) -> None:
    kind, version_dir, model = checkpoint
    _, inst = _load(version_dir, {"seq_buckets": "16", "token_buckets": "32,64"})
    feed = _rows(np.random.default_rng(2), [16, 5, 9], 16, kind)
    out = inst.run(feed, OUTPUTS)
    assert out["start_logits"].shape == (3, 16)
    for r, (start, end) in enumerate(_reference_rows(model, feed)):
        n = len(start)
        np.testing.assert_allclose(out["start_logits"][r, :n], start, atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(out["end_logits"][r, :n], end, atol=2e-4, rtol=1e-4)
        assert np.all(out["start_logits"][r, n:] == inst.packing.fill)


def test_a_packed_batch_over_the_largest_bucket_runs_in_pieces(checkpoint: tuple) -> None:
    kind, version_dir, model = checkpoint
    _, inst = _load(version_dir, {"seq_buckets": "16", "token_buckets": "16,32"})
    rng = np.random.default_rng(3)
    requests = [_rows(rng, [12, 14], 14, kind), _rows(rng, [16, 3, 8], 16, kind)]
    batch = pack(requests, inst.packing)
    got = inst.launch_packed(batch, ["end_logits"])()
    assert set(got) == {"end_logits"} and got["end_logits"].shape == (batch.total_tokens,)
    want = [e for feed in requests for _, e in _reference_rows(model, feed)]
    np.testing.assert_allclose(got["end_logits"], np.concatenate(want), atol=2e-4, rtol=1e-4)


def test_a_short_batch_after_a_long_one_ignores_what_the_long_one_left(
    checkpoint: tuple,
) -> None:
    """Token slots past a batch's last row keep an earlier batch's tokens (no fill): they
    must not reach any row of the next batch on the same profile and staging slot."""
    kind, version_dir, model = checkpoint
    _, inst = _load(version_dir, {"seq_buckets": "16", "token_buckets": "64"})
    rng = np.random.default_rng(6)
    long = _rows(rng, [16, 16, 15, 14], 16, kind)
    short = _rows(rng, [5, 3], 5, kind)
    for _ in range(2):  # both staging slots of the one 64-token profile hold the long batch
        inst.run(long, OUTPUTS)
    out = inst.run(short, OUTPUTS)
    for r, (start, end) in enumerate(_reference_rows(model, short)):
        n = len(start)
        np.testing.assert_allclose(out["start_logits"][r, :n], start, atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(out["end_logits"][r, :n], end, atol=2e-4, rtol=1e-4)


def test_packing_instance_checks_each_request(checkpoint: tuple) -> None:
    kind, version_dir, _ = checkpoint
    _, inst = _load(version_dir, {"seq_buckets": "16"})
    good = _rows(np.random.default_rng(4), [4, 2], 6, kind)
    inst.check_request(good)
    holes = dict(good, attention_mask=np.array([[1, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]]))
    with pytest.raises(InvalidInput, match="right-padded"):
        inst.run(holes, OUTPUTS)  # the scheduler's admission refuses it the same way
    with pytest.raises(InvalidInput, match="16"):
        inst.check_request(_rows(np.random.default_rng(5), [17], 17, kind))
    with pytest.raises(InvalidInput, match="input_ids"):
        inst.check_request(dict(good, input_ids=np.full((2, 6), 100, dtype=np.int64)))


def test_packing_parameters_are_checked(checkpoint: tuple) -> None:
    _, version_dir, _ = checkpoint
    with pytest.raises(ConfigError, match="max_tokens"):
        _load(version_dir, {"seq_buckets": "32", "max_tokens": "16"})
    with pytest.raises(ConfigError, match="token_buckets"):
        _load(version_dir, {"seq_buckets": "32", "token_buckets": "8,16"})
    with pytest.raises(ConfigError, match="packing must be true or false.*got 'sometimes'"):
        _load(version_dir, {"packing": "sometimes"})


# ---- GPU only ---------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["triton", "flash"])
@pytest.mark.parametrize("precision", ["fp16", "fp8"])
def test_gpu_packed_graphs_match_reference(checkpoint: tuple, precision: str, kernel: str) -> None:
    kind, version_dir, model = checkpoint
    params = {"seq_buckets": "32", "token_buckets": "64,128", "precision": precision,
              "packed_attention": kernel}  # fmt: skip
    _, inst = _load(version_dir, params, device=Device("gpu", 0))
    assert inst.asynchronous
    rng = np.random.default_rng(6)
    requests = [_rows(rng, [32, 7], 32, kind), _rows(rng, [20, 1, 30], 30, kind)]
    batch = pack(requests, inst.packing)
    first = inst.launch_packed(batch, OUTPUTS)
    second = inst.launch_packed(pack(requests[:1], inst.packing), OUTPUTS)
    got = first()
    second()
    want = [s for feed in requests for s, _ in _reference_rows(model, feed)]
    tol = 0.1 if precision == "fp16" else 0.5
    assert np.abs(got["start_logits"] - np.concatenate(want)).max() < tol


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_triton_packed_attention_matches_the_row_by_row_reference(dtype: str) -> None:
    """Rows of 1 to 384 tokens (tiles cut mid-row, a row shorter than a tile, empty slots
    past the last row), q/k/v as strided views of one fused tensor, as the encoder has them."""
    from bertserve.backends.torch.attention import _packed_attention_rowwise, packed_attention

    lengths = [1, 63, 64, 65, 150, 384, 7]
    n = sum(lengths)
    cu = np.full(len(lengths) + 4, n, np.int32)
    cu[0] = 0
    cu[1 : len(lengths) + 1] = np.cumsum(lengths)
    gen = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(n + 5, 3, 12, 64, generator=gen, device="cuda", dtype=getattr(torch, dtype))
    q, k, v = qkv.unbind(1)
    got = packed_attention(q, k, v, torch.from_numpy(cu).cuda(), 384, "triton")
    want = _packed_attention_rowwise(q.float(), k.float(), v.float(), torch.from_numpy(cu))
    assert got.shape == (n + 5, 12, 64)
    assert (got[:n].float() - want[:n].cuda()).abs().max().item() < 2e-2

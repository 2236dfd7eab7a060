"""The torch engine's logic on CPU (float32, no graphs); the GPU-only checks skip cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from bertserve.backends.base import Device, LoadContext  # noqa: E402
from bertserve.backends.torch import (  # noqa: E402
    TorchBackend,
    default_batch_buckets,
    pick_bucket,
    plan_chunks,
)
from bertserve.backends.torch.encoder import EncoderOptions, load_encoder  # noqa: E402
from bertserve.errors import ConfigError, InvalidInput  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _config(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _inputs(rng: np.random.Generator, n: int, length: int, pad: int = 0) -> dict[str, np.ndarray]:
    ids = rng.integers(1, 100, size=(n, length), dtype=np.int64)
    mask = np.ones((n, length), dtype=np.int64)
    if pad:
        mask[:, length - pad :] = 0
        ids[:, length - pad :] = 0
    types = np.zeros((n, length), dtype=np.int64)
    types[:, length // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _reference(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    feed = {k: torch.from_numpy(v) for k, v in inputs.items()}
    if model.config.model_type == "distilbert":
        feed.pop("token_type_ids")
    with torch.no_grad():
        out = model(**feed)
    return out.start_logits.numpy(), out.end_logits.numpy()


# ---- buckets --------------------------------------------------------------------------------
def test_default_batch_buckets_match_reference_profiles() -> None:
    assert default_batch_buckets(4) == (1, 4)
    assert default_batch_buckets(8) == (1, 4, 8)
    assert default_batch_buckets(256) == (1, 4, 16, 64, 256)
    assert default_batch_buckets(1) == (1,)
    assert default_batch_buckets(0) == (1,)


def test_pick_bucket_is_smallest_that_fits() -> None:
    assert pick_bucket(1, (1, 4)) == 1
    assert pick_bucket(2, (1, 4)) == 4
    assert pick_bucket(4, (4, 1)) == 4
    assert pick_bucket(9, (1, 4)) == 4


def test_plan_chunks_covers_rows_once() -> None:
    assert plan_chunks(3, (1, 4)) == [(0, 3, 4)]
    assert plan_chunks(9, (1, 4)) == [(0, 4, 4), (4, 8, 4), (8, 9, 1)]
    assert plan_chunks(0, (1, 4)) == []
    for n in range(1, 40):
        chunks = plan_chunks(n, (1, 4, 16))
        assert [c[0] for c in chunks] == [0] + [c[1] for c in chunks[:-1]]
        assert chunks[-1][1] == n
        assert all(stop - start <= bucket for start, stop, bucket in chunks)


# ---- the encoder's math vs transformers -----------------------------------------------------
@pytest.mark.parametrize("pad", [0, 5])
def test_encoder_matches_transformers_fp32(checkpoint: tuple, pad: int) -> None:
    kind, version_dir, model = checkpoint
    enc = load_encoder(version_dir, "model.safetensors", EncoderOptions(precision="fp32"), "cpu")
    inputs = _inputs(np.random.default_rng(1), 3, 16, pad=pad)
    mask = None if pad == 0 else torch.from_numpy(inputs["attention_mask"])
    types = torch.from_numpy(inputs["token_type_ids"])
    with torch.no_grad():
        logits = enc.forward(torch.from_numpy(inputs["input_ids"]), types, mask).numpy()
    start, end = _reference(model, inputs)
    keep = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(logits[0][keep], start[keep], atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(logits[1][keep], end[keep], atol=2e-4, rtol=1e-4)


def test_tanh_gelu_epilogue_stays_close(checkpoint: tuple) -> None:
    _, version_dir, model = checkpoint
    opts = EncoderOptions(precision="fp32", gelu="tanh")
    enc = load_encoder(version_dir, "model.safetensors", opts, "cpu")
    inputs = _inputs(np.random.default_rng(2), 2, 16)
    with torch.no_grad():
        logits = enc.forward(
            torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["token_type_ids"]), None
        ).numpy()
    start, _ = _reference(model, inputs)
    assert np.abs(logits[0] - start).max() < 0.05


def test_fp8_math_on_cpu_is_close(checkpoint: tuple) -> None:
    """The FP8 path's quantize/dequantize math (torch fallbacks) against fp32."""
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("torch without float8")
    from bertserve.backends.torch.kernels import bias_gelu_quant, quantize_rows

    x = torch.randn(8, 64) * 3
    q, s = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (8, 1)
    err = (q.float() * s - x).abs().max() / x.abs().max()
    assert err < 0.07
    bias = torch.randn(64)
    q, s = bias_gelu_quant(x, bias)
    ref = torch.nn.functional.gelu(x + bias)
    assert ((q.float() * s - ref).abs().max() / ref.abs().max()) < 0.07


# ---- the backend: autocomplete, load, run with padding -------------------------------------
def test_autocomplete_fills_io(checkpoint: tuple) -> None:
    kind, version_dir, _ = checkpoint
    config = _config('name: "m" backend: "bertserve_torch" max_batch_size: 4')
    TorchBackend().autocomplete(config, version_dir)
    names = [i.name for i in config.input]
    expected = ["input_ids", "attention_mask"] + (["token_type_ids"] if kind == "bert" else [])
    assert names == expected
    assert [list(i.dims) for i in config.input] == [[-1]] * len(expected)
    assert config.input[0].data_type == model_config_pb2.TYPE_INT64
    assert [o.name for o in config.output] == ["start_logits", "end_logits"]
    assert config.output[0].data_type == model_config_pb2.TYPE_FP32


def test_autocomplete_without_checkpoint_names_file(tmp_path: Path) -> None:
    config = _config('name: "m" backend: "bertserve_torch" max_batch_size: 4')
    with pytest.raises(ConfigError, match="config.json"):
        TorchBackend().autocomplete(config, tmp_path)


def _load(version_dir: Path, extra: str = "", mbs: int = 4):
    config = _config(f'name: "m" backend: "bertserve_torch" max_batch_size: {mbs} {extra}')
    backend = TorchBackend()
    backend.autocomplete(config, version_dir)
    return backend.load(config, version_dir, Device("cpu"), LoadContext("m", 1))


@pytest.mark.parametrize(("n", "length", "pad"), [(1, 16, 0), (3, 16, 4), (6, 11, 0), (4, 32, 7)])
def test_run_pads_to_profiles_and_matches_reference(
    checkpoint: tuple, n: int, length: int, pad: int
) -> None:
    kind, version_dir, model = checkpoint
    params = (
        'parameters { key: "seq_buckets" value { string_value: "16,32" } }'
        'parameters { key: "batch_buckets" value { string_value: "1,4" } }'
    )
    inst = _load(version_dir, params)
    assert inst.batch_buckets == (1, 4)
    inputs = _inputs(np.random.default_rng(n * 100 + length), n, length, pad=pad)
    feed = dict(inputs)
    if kind == "distilbert":
        feed.pop("token_type_ids")
    out = inst.run(feed, ["start_logits", "end_logits"])
    start, end = _reference(model, inputs)
    assert out["start_logits"].shape == (n, length)
    keep = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(out["start_logits"][keep], start[keep], atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(out["end_logits"][keep], end[keep], atol=2e-4, rtol=1e-4)


def test_run_rejects_too_long(checkpoint: tuple) -> None:
    _, version_dir, _ = checkpoint
    inst = _load(version_dir, 'parameters { key: "seq_buckets" value { string_value: "16" } }')
    with pytest.raises(InvalidInput, match="16"):
        inst.run({"input_ids": np.ones((1, 17), dtype=np.int64)}, ["start_logits"])


def test_bad_parameters_name_the_field(checkpoint: tuple) -> None:
    _, version_dir, _ = checkpoint
    with pytest.raises(ConfigError, match="batch_buckets"):
        _load(version_dir, 'parameters { key: "batch_buckets" value { string_value: "1,8" } }')
    with pytest.raises(ConfigError, match="precision"):
        _load(version_dir, 'parameters { key: "precision" value { string_value: "int3" } }')
    with pytest.raises(ConfigError, match="max_position"):
        _load(version_dir, 'parameters { key: "seq_buckets" value { string_value: "128" } }')
    with pytest.raises(ConfigError, match="cuda_graphs must be true or false.*got 'maybe'"):
        _load(
            version_dir,
            'parameters { key: "cuda_graphs" value { string_value: "maybe" } }'
            'parameters { key: "seq_buckets" value { string_value: "16" } }',
        )


def test_a_model_shorter_than_the_default_buckets_gets_one_at_its_length(
    checkpoint: tuple,
) -> None:
    _, version_dir, _ = checkpoint  # max_position_embeddings 64 < 128, the smallest default
    assert _load(version_dir).seq_buckets == (64,)


def test_instances_share_weights(checkpoint: tuple) -> None:
    _, version_dir, _ = checkpoint
    params = 'parameters { key: "seq_buckets" value { string_value: "16" } }'
    a, b = _load(version_dir, params), _load(version_dir, params)
    assert a.encoder is b.encoder


# ---- GPU only -------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_graphs_match_reference(checkpoint: tuple, precision: str) -> None:
    kind, version_dir, model = checkpoint
    config = _config(
        'name: "m" backend: "bertserve_torch" max_batch_size: 4 '
        f'parameters {{ key: "precision" value {{ string_value: "{precision}" }} }}'
        'parameters { key: "seq_buckets" value { string_value: "16,32" } }'
    )
    backend = TorchBackend()
    backend.autocomplete(config, version_dir)
    inst = backend.load(config, version_dir, Device("gpu", 0), LoadContext("m", 1))
    inputs = _inputs(np.random.default_rng(5), 3, 20, pad=3)
    feed = dict(inputs)
    if kind == "distilbert":
        feed.pop("token_type_ids")
    out = inst.run(feed, ["start_logits", "end_logits"])
    start, _ = _reference(model, inputs)
    keep = inputs["attention_mask"].astype(bool)
    assert np.abs(out["start_logits"][keep] - start[keep]).max() < 0.1


def test_run_rejects_out_of_vocabulary_ids(checkpoint: tuple) -> None:
    """On a GPU such an index would be a device-side assert that kills the CUDA context."""
    _, version_dir, _ = checkpoint
    inst = _load(version_dir, 'parameters { key: "seq_buckets" value { string_value: "16" } }')
    with pytest.raises(InvalidInput, match="input_ids"):
        inst.run({"input_ids": np.full((1, 8), 100, dtype=np.int64)}, ["start_logits"])
    with pytest.raises(InvalidInput, match="input_ids"):
        inst.run({"input_ids": np.full((1, 8), -1, dtype=np.int64)}, ["start_logits"])


def test_weights_are_freed_with_the_last_instance(checkpoint: tuple) -> None:
    from bertserve.backends.torch import weights as torch_weights

    _, version_dir, _ = checkpoint
    params = 'parameters { key: "seq_buckets" value { string_value: "16" } }'
    a, b = _load(version_dir, params), _load(version_dir, params)
    key = a._weights_key
    assert torch_weights._weights[key][1] == 2
    a.close()
    assert key in torch_weights._weights
    b.close()
    b.close()  # closing twice is harmless
    assert key not in torch_weights._weights


def test_settings_defaults_follow_the_config(checkpoint: tuple) -> None:
    from bertserve.backends.torch import EngineSettings

    kind, version_dir, _ = checkpoint
    config = _config(
        'name: "m" backend: "bertserve_torch" max_batch_size: 8 '
        'input { name: "input_ids" data_type: TYPE_INT64 dims: [ 32 ] }'
    )
    cpu = EngineSettings.from_config(config, version_dir, Device("cpu"))
    assert cpu.seq_buckets == (32,)  # a fixed input length is the one profile length
    assert cpu.batch_buckets == (1, 4, 8)
    assert cpu.encoder.precision == "fp32"  # fp16 is asked of GPUs only
    assert not cpu.cuda_graphs
    assert cpu.has_token_types == (kind == "bert")


@needs_cuda
@pytest.mark.gpu
def test_gpu_load_while_another_instance_serves(checkpoint: tuple) -> None:
    """A model (re)loads on a worker thread while others serve: its graph capture must not
    break, nor be broken by, CUDA calls from the serving threads."""
    import threading

    kind, version_dir, _ = checkpoint
    params = (
        "instance_group { kind: KIND_GPU } "
        'parameters { key: "seq_buckets" value { string_value: "16,32" } }'
    )
    config = _config(f'name: "m" backend: "bertserve_torch" max_batch_size: 4 {params}')
    backend = TorchBackend()
    backend.autocomplete(config, version_dir)
    serving = backend.load(config, version_dir, Device("gpu", 0), LoadContext("m", 1))
    inputs = _inputs(np.random.default_rng(9), 3, 20, pad=2)
    if kind == "distilbert":
        inputs.pop("token_type_ids")
    expected = serving.run(inputs, ["start_logits"])["start_logits"]
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            while not stop.is_set():
                got = serving.run(inputs, ["start_logits"])["start_logits"]
                np.testing.assert_allclose(got, expected, rtol=0, atol=0)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        for _ in range(3):
            other = backend.load(config, version_dir, Device("gpu", 0), LoadContext("m", 1))
            other.run(inputs, ["start_logits"])
            other.close()
    finally:
        stop.set()
        thread.join()
    assert not errors, errors


def _two_launches(inst, kind: str) -> None:
    """Two batches launched back to back, waited for in order, give what run() gives: each
    launch fills its own staging slot, so the second cannot overwrite the first's logits."""
    a = _inputs(np.random.default_rng(21), 3, 20, pad=2)
    b = _inputs(np.random.default_rng(22), 4, 20, pad=0)
    if kind == "distilbert":
        a.pop("token_type_ids")
        b.pop("token_type_ids")
    want_a = inst.run(a, ["start_logits", "end_logits"])
    want_b = inst.run(b, ["start_logits", "end_logits"])
    wait_a = inst.launch(a, ["start_logits", "end_logits"])
    wait_b = inst.launch(b, ["end_logits"])
    got_a, got_b = wait_a(), wait_b()
    assert set(got_b) == {"end_logits"}
    np.testing.assert_array_equal(got_a["start_logits"], want_a["start_logits"])
    np.testing.assert_array_equal(got_a["end_logits"], want_a["end_logits"])
    np.testing.assert_array_equal(got_b["end_logits"], want_b["end_logits"])


def test_launches_in_flight_keep_their_own_results(checkpoint: tuple) -> None:
    kind, version_dir, _ = checkpoint
    inst = _load(version_dir, 'parameters { key: "seq_buckets" value { string_value: "32" } }')
    assert not inst.asynchronous  # on the CPU, launch() runs the batch at once
    _two_launches(inst, kind)


@needs_cuda
@pytest.mark.gpu
def test_gpu_launches_in_flight_keep_their_own_results(checkpoint: tuple) -> None:
    kind, version_dir, _ = checkpoint
    inst = _gpu_instance(version_dir)
    assert inst.asynchronous
    _two_launches(inst, kind)


def _gpu_instance(version_dir: Path):
    """An instance on GPU 0, max batch 4, one 32-token sequence bucket."""
    config = _config(
        'name: "m" backend: "bertserve_torch" max_batch_size: 4 '
        'parameters { key: "seq_buckets" value { string_value: "32" } }'
    )
    backend = TorchBackend()
    backend.autocomplete(config, version_dir)
    return backend.load(config, version_dir, Device("gpu", 0), LoadContext("m", 1))


@needs_cuda
@pytest.mark.gpu
async def test_gpu_batches_launched_from_the_loop_or_a_thread_give_the_same_logits(
    checkpoint: tuple,
) -> None:
    """A GPU version's scheduler launches a request that finds it idle from the event loop
    and hands it to an instance thread (Scheduler._launch_idle); under load the threads launch.
    Both give what `run()` gives for the same rows."""
    import asyncio
    import threading
    import time

    from bertserve.batching import BatchingPolicy, Scheduler
    from bertserve.stats import ModelStats, RequestTiming

    kind, version_dir, _ = checkpoint
    insts = [_gpu_instance(version_dir) for _ in "ab"]
    launched_on: list[int] = []
    for inst in insts:
        launch = inst.launch

        def recording(inputs, outputs, launch=launch):
            launched_on.append(threading.get_ident())
            return launch(inputs, outputs)

        inst.launch = recording
    rng = np.random.default_rng(11)
    rows = [_inputs(rng, 1, 24) for _ in range(12)]
    if kind == "distilbert":
        for row in rows:
            row.pop("token_type_ids")
    want = [insts[0].run(dict(r), ["start_logits"])["start_logits"] for r in rows]
    launched_on.clear()  # (run() launches too, on this thread)
    scheduler = Scheduler(
        "m", BatchingPolicy(max_batch_size=4, dynamic=True), insts, ModelStats("m", "1")
    )
    scheduler.start()

    def submit(row: dict[str, np.ndarray]) -> asyncio.Future:
        return scheduler.submit(
            dict(row), ["start_logits"], 1, RequestTiming(time.perf_counter_ns())
        )

    try:
        for row, expected in zip(rows[:4], want[:4], strict=True):
            await asyncio.sleep(0.02)  # idle: the loop launches
            got = (await submit(row))["start_logits"]
            np.testing.assert_array_equal(got, expected)
        burst = await asyncio.gather(*(submit(row) for row in rows[4:]))
        for got, expected in zip(burst, want[4:], strict=True):
            np.testing.assert_allclose(got["start_logits"], expected, atol=0.05)
    finally:
        await scheduler.stop()
    loop_thread = threading.get_ident()
    assert launched_on.count(loop_thread) >= 4
    assert any(ident != loop_thread for ident in launched_on)

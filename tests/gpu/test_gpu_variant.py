"""write_gpu_variant on CPU: files, config fields, parity through the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from bertserve.backends.base import Device  # noqa: E402
from bertserve.builder.gpu_variant import write_gpu_variant  # noqa: E402
from bertserve.builder.presets import ARCHITECTURES, Batching, Variant  # noqa: E402
from bertserve.builder.vocabulary import write_generated_tokenizer  # noqa: E402


def _bert_trt_variant(
    tmp_path: Path, *, hidden: int, heads: int, intermediate: int, seq: int, replaces: str | None
) -> tuple[torch.nn.Module, Path, Variant]:
    """A small random BERT QA model, its version folder (with a tokenizer) and the
    `bert_base_trt_gpu` variant at `seq` with the reference's batching."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=1000, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=128,
    )  # fmt: skip
    model = transformers.BertForQuestionAnswering(cfg).eval()
    version_dir = tmp_path / "bert_base_trt_gpu" / "1"
    write_generated_tokenizer(version_dir / "tokenizer", 1000, 128)
    batching = Batching(
        max_batch_size=4, preferred_batch_sizes=(4,), max_queue_delay_us=200_000, instances=2
    )
    variant = Variant(
        "bert_base_trt_gpu", ARCHITECTURES["bert-base"], "gpu", "fp16", seq, batching,
        gpu_runtime="trt", replaces=replaces,
    )  # fmt: skip
    return model, version_dir, variant


def test_writes_engine_files_and_config(tmp_path: Path) -> None:
    model, version_dir, variant = _bert_trt_variant(
        tmp_path, hidden=64, heads=4, intermediate=128, seq=64, replaces="bert_base_trt_gpu"
    )
    config = text_format.Parse(
        'name: "bert_base_trt_gpu" max_batch_size: 4 platform: "onnxruntime_onnx" '
        "instance_group { count: 2 kind: KIND_GPU } "
        'parameters { key: "weights" value { string_value: "random" } }',
        model_config_pb2.ModelConfig(),
    )
    report = write_gpu_variant(variant, model, config, version_dir, device=Device("cpu"))
    assert (version_dir / "model.safetensors").is_file()
    assert (version_dir / "config.json").is_file()
    assert config.backend == "bertserve_torch"
    assert not config.platform
    assert config.parameters["seq_buckets"].string_value == "64"
    assert config.parameters["precision"].string_value == "fp16"
    parity = report["parity"]
    # fp16 weights on disk, fp32 compute on CPU: far inside the fp16 tolerance.
    assert parity["passed"], parity
    assert parity["max_relative_error"] < 1e-2
    assert report["engine"]["profiles"] == [[1, 64], [4, 64]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_parity_on_gpu(tmp_path: Path) -> None:
    """The builder's path on a GPU: fp16 engine with CUDA graphs against fp32 transformers."""
    model, version_dir, variant = _bert_trt_variant(
        tmp_path, hidden=128, heads=2, intermediate=512, seq=128, replaces=None
    )
    config = model_config_pb2.ModelConfig(name="bert_base_trt_gpu", max_batch_size=4)
    report = write_gpu_variant(variant, model, config, version_dir)
    assert report["parity"]["passed"], report["parity"]
    assert report["engine"]["device"] != "cpu"

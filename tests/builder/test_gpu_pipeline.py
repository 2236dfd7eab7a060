"""The QA pipeline `bertserve build` writes beside a GPU (`bertserve_torch`) model: that engine
holds one sequence length, so the pipeline's windows must fit it. Served here on CPU (the
same engine in float32), through the real server and `bertserve ask`."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from bertserve.backends.base import Device  # noqa: E402
from bertserve.backends.qa_pipeline import PipelineSettings  # noqa: E402
from bertserve.builder.gpu_variant import write_gpu_variant  # noqa: E402
from bertserve.builder.presets import ARCHITECTURES, Batching, Variant  # noqa: E402
from bertserve.builder.qa import pipeline_parameters, write_pipeline  # noqa: E402
from bertserve.builder.vocabulary import write_generated_tokenizer  # noqa: E402
from bertserve.qa.client import AnswerClient  # noqa: E402
from tests.conftest import start_server  # noqa: E402

SEQ = 64
BATCHING = Batching(
    max_batch_size=4, preferred_batch_sizes=(4,), max_queue_delay_us=2_000, instances=1
)


def _variant(arch: str) -> Variant:
    return Variant(f"{arch}_gpu", ARCHITECTURES[arch], "gpu", "fp16", SEQ, BATCHING)


def test_gpu_pipeline_windows_fit_the_engine() -> None:
    for arch, inputs in (
        ("distilbert", ("input_ids", "attention_mask")),
        ("bert-base", ("input_ids", "attention_mask", "token_type_ids")),
    ):
        params = pipeline_parameters(_variant(arch))
        config = model_config_pb2.ModelConfig(name="p", backend="bertserve_qa")
        config.parameters["qa_model"].string_value = "m"
        for key, value in params.items():
            config.parameters[key].string_value = value
        settings = PipelineSettings.from_config(config)
        assert settings.windows.max_seq_len == SEQ
        assert settings.buckets == (SEQ,)
        assert settings.qa_inputs == inputs
        assert settings.max_windows_per_call == 4


def test_a_gpu_model_with_large_batches_gets_the_wide_pipeline(tmp_path: Path) -> None:
    """Eight instances of 64 pairs, 64 windows a call, in front of a GPU model that takes 64
    rows or more; eight of eight pairs and four windows in front of the reference's small
    batches; two of eight and four in front of a CPU model. Eight instances run their text
    work in processes (the default from four), two on their threads."""
    wide = Batching(max_batch_size=256, preferred_batch_sizes=(), max_queue_delay_us=0, instances=2)
    cases = [
        (Variant("g", ARCHITECTURES["bert-base"], "gpu", "fp16", SEQ, wide), (8, 64, 64)),
        (_variant("bert-base"), (8, 8, 4)),
        (Variant("c", ARCHITECTURES["bert-base"], "cpu", "fp32", 384, wide), (2, 8, 4)),
    ]
    for variant, (instances, pairs, windows) in cases:
        folder = write_pipeline(variant, tmp_path / variant.name)
        config = text_format.Parse(
            (folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )
        assert config.instance_group[0].count == instances
        assert config.max_batch_size == pairs
        settings = PipelineSettings.from_config(config)
        assert settings.max_windows_per_call == windows
        assert settings.processes is (instances >= 4)


@pytest.mark.e2e
def test_gpu_engine_behind_its_pipeline_answers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=128,
    )  # fmt: skip
    model = transformers.BertForQuestionAnswering(cfg).eval()
    variant = _variant("bert-base")
    model_dir = tmp_path / variant.name
    write_generated_tokenizer(model_dir / "1" / "tokenizer", 1000, 128)
    config = model_config_pb2.ModelConfig(name=variant.name, max_batch_size=4)
    # The engine on CPU: what the builder writes, with the instance group moved off the GPU.
    config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    config.parameters["weights"].string_value = "random"
    write_gpu_variant(variant, model, config, model_dir / "1", device=Device("cpu"))
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    write_pipeline(variant, tmp_path)

    context = " ".join(f"Sentence {i} says the keeper lit the lamp at dusk." for i in range(40))
    server = start_server(tmp_path)
    try:
        with AnswerClient(server.http_url, f"{variant.name}_qa") as client:
            [answer] = client.ask(["Who lit the lamp?"], [context])
            assert client.random_weights() == [variant.name]
    finally:
        server.stop()
    # A 400-token passage in 64-token windows: answered from inside the passage.
    if not answer.is_impossible:
        assert context[answer.start_char : answer.end_char] == answer.text
    assert 0.0 <= answer.score <= 1.0

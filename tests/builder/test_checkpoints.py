"""The real loading path, on checkpoint folders written with save_pretrained; bad folders and
an offline Hub fail with one clear message and leave the repository alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bertserve.builder import BuildError, build_preset

from .conftest import snapshot


def test_bert_folder_builds_fp32_and_int8(bert_checkpoint: Path, tmp_path: Path) -> None:
    fp32 = build_preset("tiny", tmp_path, weights=str(bert_checkpoint))
    int8 = build_preset("tiny", tmp_path, weights=bert_checkpoint, precision="int8")
    for outcome in (fp32, int8):
        (variant,) = outcome.built
        assert variant.report["weights"] == "dir"
        assert variant.report["weights_source"] == str(bert_checkpoint)
        assert variant.report["tokenizer"]["generated"] is False
        assert variant.parity["agreement_checked"] is True
        assert variant.parity["passed"]
    assert fp32.built[0].parity["max_abs_error"] < 1e-4
    # Quantized weights: a quarter of the fp32 file, give or take the float embeddings' scales.
    assert int8.built[0].report["model_bytes"] < 0.5 * fp32.built[0].report["model_bytes"]


def test_distilbert_folder_builds_cpu_pair_and_lists_gpu_as_not_built(
    distilbert_checkpoint: Path, tmp_path: Path
) -> None:
    outcome = build_preset("distilbert", tmp_path, weights=distilbert_checkpoint, seq_len=64)
    status = {v.name: v.status for v in outcome.variants}
    assert status == {
        "bert_distill_onnx_cpu": "built",
        "bert_distill_onnx_cpu_int8": "built",
        "bert_distill_onnx_gpu": "not built",
    }
    gpu = next(v for v in outcome.variants if v.device == "gpu")
    assert "GPU" in gpu.reason or "gpu_variant" in gpu.reason
    fused = outcome.built[0].report["fused_operators"]
    assert fused["Attention"] == 2 and fused["EmbedLayerNormalization"] == 1
    cfg = (tmp_path / "bert_distill_onnx_cpu" / "config.pbtxt").read_text()
    assert 'string_value: "bert_distill_tf_cpu"' in cfg  # stands in for the reference model
    assert not (tmp_path / "bert_distill_onnx_gpu").exists()


def test_parent_folder_with_one_subfolder_per_architecture(
    distilbert_checkpoint: Path, tmp_path: Path
) -> None:
    root = tmp_path / "weights"
    shutil.copytree(distilbert_checkpoint, root / "distilbert")
    outcome = build_preset(
        "distilbert", tmp_path / "repo", weights=root, only=["bert_distill_onnx_cpu"]
    )
    assert [v.name for v in outcome.built] == ["bert_distill_onnx_cpu"]


def _broken_copies(src: Path, base: Path) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    no_config = shutil.copytree(src, base / "no_config")
    (no_config / "config.json").unlink()
    cases["No checkpoint for 'tiny'"] = no_config
    wrong_type = shutil.copytree(src, base / "wrong_type")
    cfg = json.loads((wrong_type / "config.json").read_text())
    (wrong_type / "config.json").write_text(json.dumps({**cfg, "model_type": "roberta"}))
    cases["holds a 'roberta' checkpoint but 'tiny' needs 'bert'"] = wrong_type
    corrupt = shutil.copytree(src, base / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    cases["Could not load the bert weights"] = corrupt
    no_tokenizer = shutil.copytree(src, base / "no_tokenizer")
    for f in ("tokenizer.json", "vocab.txt"):
        (no_tokenizer / f).unlink()
    cases["has no tokenizer"] = no_tokenizer
    return cases


def test_bad_checkpoint_folders(bert_checkpoint: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    build_preset("tiny", repo)
    before = snapshot(repo)
    for message, folder in _broken_copies(bert_checkpoint, tmp_path).items():
        with pytest.raises(BuildError, match=message):
            build_preset("tiny", repo, weights=folder, force=True)
        assert snapshot(repo) == before, message


def test_checkpoint_without_qa_head_is_refused(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    from bertserve.builder.vocabulary import write_generated_tokenizer

    from .conftest import TINY_BERT

    folder = tmp_path / "base"
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(str(folder))
    write_generated_tokenizer(folder, 1024, 512)
    with pytest.raises(BuildError, match="has no question-answering head"):
        build_preset("tiny", tmp_path / "repo", weights=folder)
    assert not (tmp_path / "repo").exists()


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="neither 'hub', 'random' nor an existing folder"):
        build_preset("tiny", tmp_path / "repo", weights=str(tmp_path / "nowhere"))


def test_hub_offline_fails_in_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BuildError) as info:
        build_preset("distilbert", tmp_path / "repo", only=["bert_distill_onnx_cpu"])
    message = str(info.value)
    assert message.startswith("Could not fetch distilbert-base-cased-distilled-squad")
    assert "--weights DIR" in message and "--weights random" in message
    assert message.count(". ") == 0  # one sentence
    assert not (tmp_path / "repo").exists()


def test_random_weights_take_a_cached_real_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from bertserve.builder.checkpoint import _cached_tokenizer
    from bertserve.builder.presets import ARCHITECTURES
    from bertserve.builder.vocabulary import write_generated_tokenizer

    arch = ARCHITECTURES["distilbert"]
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert _cached_tokenizer(arch) is None  # empty cache: the generated vocabulary is used
    repo = tmp_path / f"models--{arch.hub_id.replace('/', '--')}"  # type: ignore[union-attr]
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    write_generated_tokenizer(repo / "snapshots" / revision, 1024, 512)
    tokenizer = _cached_tokenizer(arch)
    assert tokenizer is not None and len(tokenizer) == 1024

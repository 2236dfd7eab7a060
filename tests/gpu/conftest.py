"""Tiny random QA checkpoints written the way `bertserve build` writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def write_checkpoint(version_dir: Path, kind: str, seed: int = 0) -> torch.nn.Module:
    """A small random BertForQuestionAnswering / DistilBertForQuestionAnswering saved as
    model.safetensors + config.json in `version_dir`; returns the fp32 model (eval mode)."""
    torch.manual_seed(seed)
    if kind == "bert":
        cfg = transformers.BertConfig(
            vocab_size=100,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
            attn_implementation="eager",
        )
        model = transformers.BertForQuestionAnswering(cfg)
    else:
        cfg = transformers.DistilBertConfig(
            vocab_size=100, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
            max_position_embeddings=64, attn_implementation="eager",
        )  # fmt: skip
        model = transformers.DistilBertForQuestionAnswering(cfg)
    # Larger-than-default init so that logits spread out and argmax comparisons mean something.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.08)
    model.eval()
    version_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(version_dir), safe_serialization=True)
    return model


@pytest.fixture(params=["bert", "distilbert"])
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path, torch.nn.Module]:
    version_dir = tmp_path / "model" / "1"
    model = write_checkpoint(version_dir, request.param)
    return request.param, version_dir, model

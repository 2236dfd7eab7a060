"""The text-in/answer-out pipeline model written beside each QA model a build produces, so
`bertserve ask` and `bertserve eval` work on a fresh repository without hand-written configs.

`<model>_qa` is a `bertserve_qa` model (see docs/qa.md) whose config names `<model>` as its
QA model, the inputs that model takes, and windows it can run: a CPU (ONNX) model takes any
length up to its position table, so the pipeline uses SQuAD's usual 384-token windows; a GPU
engine is built for one sequence length, so the pipeline's windows are exactly that long.
"""

from __future__ import annotations

from pathlib import Path

from bertserve.builder.model_config import write_model_config
from bertserve.builder.presets import Variant

__all__ = ["pipeline_name", "pipeline_parameters", "pipeline_shape", "write_pipeline"]

_SQUAD_WINDOW = 384
#: Architectures fine-tuned on SQuAD 2.0, whose [CLS] score may say "no answer".
_SQUAD2 = {"bert-base"}


def pipeline_name(model: str) -> str:
    return f"{model}_qa"


def pipeline_parameters(variant: Variant) -> dict[str, str]:
    """The pipeline's config parameters for a QA model built from `variant`."""
    window = variant.seq_len if variant.device == "gpu" else _SQUAD_WINDOW
    params = {
        "qa_inputs": ",".join(variant.architecture.input_names),
        "max_seq_len": str(window),
        "max_windows_per_call": str(pipeline_shape(variant)[2]),
        "allow_impossible": "true" if variant.architecture.key in _SQUAD2 else "false",
    }
    if window < _SQUAD_WINDOW:
        # run_squad's 64-token questions and 128-token overlap assume 384-token windows;
        # keep their proportions so a short window still holds context.
        params["max_query_len"] = str(max(8, window // 6))
        params["doc_stride"] = str(max(1, window // 3))
    if variant.device == "gpu":
        params["buckets"] = str(window)
    return params


#: A GPU QA model that takes batches of at least this many rows gets the wide pipeline.
_WIDE_FROM = 64


def pipeline_shape(variant: Variant) -> tuple[int, int, int]:
    """(instances, pairs a batch, windows a call) of the pipeline in front of `variant`.

    In front of a CPU model, two instances of eight pairs, four windows a call: the cores
    are the limit there, and the model's own threads want them. In front of a GPU model,
    eight instances (their text work in processes of their own, the default from four):
    of 64 pairs and 64 windows a call where the model takes batches of 64 rows or more, the
    shape that kept an H200's packing BERT-base busiest of those measured (docs/qa.md;
    smaller calls from more instances fill the model's batches less); of eight pairs and
    four windows a call where it takes small batches (the reference's max batch 4), which
    answered 1.9-2.0x the questions of two instances there (docs/benchmarks.md, round 8)."""
    mbs = variant.batching.max_batch_size
    if variant.device != "gpu":
        return 2, 8, min(4, mbs)
    if mbs >= _WIDE_FROM:
        return 8, _WIDE_FROM, _WIDE_FROM
    return 8, 8, min(4, mbs)


def write_pipeline(variant: Variant, root: Path) -> Path:
    """Write `<root>/<model>_qa/config.pbtxt` and its empty version folder; the folder."""
    from bertserve.backends.qa_pipeline import pipeline_config

    name = pipeline_name(variant.name)
    instances, pairs, _ = pipeline_shape(variant)
    config = pipeline_config(
        name,
        variant.name,
        pipeline_parameters(variant),
        max_batch_size=pairs,
        instances=instances,
    )
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    write_model_config(config, model_dir)
    return model_dir

"""Accuracy of a built variant against the transformers model in fp32, on the same real
tokenized question/context pairs.

Logits are compared only where attention_mask is 1 (padded positions are undefined and
differ between fused and unfused attention). Agreement is the share of start and end argmaxes
(over unpadded positions) that match the reference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertserve.builder.errors import ParityError
from bertserve.builder.export import OUTPUT_NAMES
from bertserve.builder.samples import QA_PAIRS

if TYPE_CHECKING:
    import torch

__all__ = [
    "TOLERANCES",
    "Parity",
    "ParityInputs",
    "Tolerance",
    "check_parity",
    "measure_parity",
    "parity_inputs",
    "reference_logits",
]


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Limits a variant of one precision must meet.

    `max_relative_error` is the max absolute logit error divided by the spread (max - min) of
    the reference logits, so one bound fits trained and random weights alike.
    `min_agreement` applies to real weights only: with random weights the logits are nearly
    flat, argmaxes sit on near-ties and their agreement measures noise (it is still reported).
    """

    max_relative_error: float
    min_agreement: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_relative_error=1e-3, min_agreement=0.99),
    "fp16": Tolerance(max_relative_error=1e-2, min_agreement=0.9),
    "int8": Tolerance(max_relative_error=0.15, min_agreement=0.8),
}


@dataclass(frozen=True, slots=True)
class ParityInputs:
    """Tokenized samples, padded to the variant's sequence length."""

    arrays: dict[str, np.ndarray]

    @property
    def mask(self) -> np.ndarray:
        return self.arrays["attention_mask"].astype(bool)


@dataclass(frozen=True, slots=True)
class Parity:
    """One variant's agreement with the fp32 reference."""

    samples: int
    seq_len: int
    max_abs_error: float
    mean_abs_error: float
    reference_logit_spread: float
    max_relative_error: float
    start_agreement: float
    end_agreement: float
    agreement: float
    tolerance: dict[str, float]
    #: Whether min_agreement was enforced (False for random weights; see Tolerance).
    agreement_checked: bool
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parity_inputs(tokenizer_dir: Path, input_names: tuple[str, ...], seq_len: int) -> ParityInputs:
    """Tokenize QA_PAIRS with the tokenizer written beside the model."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    questions = [q for q, _ in QA_PAIRS]
    contexts = [c for _, c in QA_PAIRS]
    encoded = tokenizer(
        questions,
        contexts,
        padding="max_length",
        truncation="only_second",
        max_length=seq_len,
        return_tensors="np",
        return_token_type_ids=True,
    )
    return ParityInputs({name: np.asarray(encoded[name], dtype=np.int64) for name in input_names})


def reference_logits(model: torch.nn.Module, inputs: ParityInputs) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.arrays.items()})
    return {name: getattr(out, name).float().numpy() for name in OUTPUT_NAMES}


def run_onnx(model_path: Path, inputs: ParityInputs) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in inputs.arrays.items() if k in feed_names}
    outputs = session.run(list(OUTPUT_NAMES), feed)
    return {
        name: np.asarray(o, dtype=np.float32) for name, o in zip(OUTPUT_NAMES, outputs, strict=True)
    }


def measure_parity(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    inputs: ParityInputs,
    precision: str,
    check_agreement: bool,
) -> Parity:
    mask = inputs.mask
    tol = TOLERANCES[precision]
    errors, spread, agree = [], 0.0, []
    for name in OUTPUT_NAMES:
        ref, got = reference[name], candidate[name]
        if got.shape != ref.shape:
            raise ParityError(
                f"Output {name} has shape {list(got.shape)}, the reference "
                f"{list(ref.shape)}: the export lost a dynamic axis; rebuild with --force."
            )
        errors.append(np.abs(got - ref)[mask])
        spread = max(spread, float(ref[mask].max() - ref[mask].min()))
        ref_arg = np.where(mask, ref, -np.inf).argmax(axis=1)
        got_arg = np.where(mask, got, -np.inf).argmax(axis=1)
        agree.append(float((ref_arg == got_arg).mean()))
    err = np.concatenate(errors)
    max_abs = float(err.max()) if np.isfinite(err).all() else float("inf")
    relative = max_abs / spread if spread > 0 else float("inf")
    agreement = float(np.mean(agree))
    passed = relative <= tol.max_relative_error and (
        not check_agreement or agreement >= tol.min_agreement
    )
    return Parity(
        samples=int(mask.shape[0]),
        seq_len=int(mask.shape[1]),
        max_abs_error=max_abs,
        mean_abs_error=float(err.mean()),
        reference_logit_spread=spread,
        max_relative_error=relative,
        start_agreement=agree[0],
        end_agreement=agree[1],
        agreement=agreement,
        tolerance={
            "max_relative_error": tol.max_relative_error,
            "min_agreement": tol.min_agreement,
        },
        agreement_checked=check_agreement,
        passed=passed,
    )


def check_parity(name: str, parity: Parity) -> None:
    """Raise ParityError when `parity` failed its tolerance."""
    if parity.passed:
        return
    tol = parity.tolerance
    limit = f" (limit {tol['min_agreement']:.0%})" if parity.agreement_checked else ""
    raise ParityError(
        f"Variant {name} fails its accuracy check: max abs logit error {parity.max_abs_error:.4g}"
        f" ({parity.max_relative_error:.3g} of the logit spread, limit "
        f"{tol['max_relative_error']:.3g}), argmax agreement {parity.agreement:.1%}"
        f"{limit}"
        "; the repository was left unchanged: build a higher precision (--precision fp32) "
        "or drop the variant with --only."
    )

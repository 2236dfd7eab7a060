"""Where weights come from: the Hugging Face Hub, a local checkpoint folder, or a seeded
random initialisation of the exact architecture.

Every loader returns a `Checkpoint`: an eval-mode transformers QA model using eager attention
(ONNX Runtime's optimizer recognises the attention subgraph the TorchScript exporter writes
for it) and a way to write the matching tokenizer files. Random weights take the real
tokenizer when the Hub checkpoint is already in the local Hugging Face cache, else a generated
cased WordPiece vocabulary of the right size (see bertserve.builder.vocabulary).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertserve.builder.errors import BuildError
from bertserve.builder.presets import Architecture
from bertserve.builder.vocabulary import write_generated_tokenizer

if TYPE_CHECKING:
    import torch

__all__ = ["Checkpoint", "WeightsSource", "load_checkpoint", "parse_weights"]

#: "hub", "random" or a local folder.
WeightsSource = str | Path

_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
_QA_HEADS = ("qa_outputs.weight", "qa_outputs.bias")


@dataclass
class Checkpoint:
    """A loaded QA model and where it came from."""

    architecture: Architecture
    model: torch.nn.Module
    #: "random", "hub" or "dir" (recorded in config parameters and build reports).
    weights: str
    #: Hub id, folder path, or "seed=N" for random weights.
    source: str
    #: Writes tokenizer files (tokenizer.json, vocab.txt, tokenizer_config.json) into a folder.
    write_tokenizer: Callable[[Path], None]
    #: True when the tokenizer is generated (not the checkpoint's real vocabulary).
    generated_tokenizer: bool
    #: Input names the model's forward takes, in order (DistilBERT has no token_type_ids).
    input_names: tuple[str, ...]

    @property
    def config(self) -> Any:
        """The transformers config (BertConfig or DistilBertConfig)."""
        return self.model.config

    @property
    def max_positions(self) -> int:
        return int(self.config.max_position_embeddings)

    @property
    def num_heads(self) -> int:
        # DistilBertConfig maps these names onto n_heads / dim.
        return int(self.config.num_attention_heads)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)


def parse_weights(value: str) -> WeightsSource:
    """`--weights` value: "hub", "random" or an existing folder."""
    if value in ("hub", "random"):
        return value
    path = Path(value).expanduser()
    if not path.is_dir():
        raise BuildError(
            f"--weights {value!r} is neither 'hub', 'random' nor an existing folder: "
            "pass a checkpoint folder written by save_pretrained."
        )
    return path


def load_checkpoint(arch: Architecture, weights: WeightsSource, seed: int = 0) -> Checkpoint:
    """Load `arch` from the given weights source."""
    if weights == "random":
        return _random(arch, seed)
    if weights == "hub":
        return _from_folder(arch, _download(arch), weights="hub", source=str(arch.hub_id))
    folder = _checkpoint_folder(arch, Path(weights))
    return _from_folder(arch, folder, weights="dir", source=str(folder))


def _config_class(model_type: str) -> Any:
    from transformers import BertConfig, DistilBertConfig

    return DistilBertConfig if model_type == "distilbert" else BertConfig


def _model_class(model_type: str) -> Any:
    from transformers import BertForQuestionAnswering, DistilBertForQuestionAnswering

    return (
        DistilBertForQuestionAnswering if model_type == "distilbert" else BertForQuestionAnswering
    )


def _random(arch: Architecture, seed: int) -> Checkpoint:
    import torch

    config = _config_class(arch.model_type)(**arch.config, attn_implementation="eager")
    # Seed a private generator state so building never disturbs the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _model_class(arch.model_type)(config).eval()
    max_len = int(config.max_position_embeddings)
    cached = _cached_tokenizer(arch)
    write_tokenizer: Callable[[Path], None] = (
        partial(_save_tokenizer, cached)
        if cached is not None
        else partial(
            write_generated_tokenizer, vocab_size=arch.vocab_size, model_max_length=max_len
        )
    )
    return Checkpoint(
        architecture=arch,
        model=model,
        weights="random",
        source=f"seed={seed}",
        write_tokenizer=write_tokenizer,
        generated_tokenizer=cached is None,
        input_names=arch.input_names,
    )


def _cached_tokenizer(arch: Architecture) -> Any | None:
    """The real tokenizer when the Hub checkpoint's files are already in the local cache (no
    network access: random-weight builds stay fast and work offline)."""
    if arch.hub_id is None:
        return None
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            arch.hub_id, allow_patterns=["*.json", "*.txt"], local_files_only=True
        )
        return _load_tokenizer(Path(folder))
    except Exception:  # not cached (or unreadable): fall back to the generated vocabulary
        return None


def _download(arch: Architecture) -> Path:
    if arch.hub_id is None:
        raise BuildError(
            f"Architecture {arch.key!r} has no Hub checkpoint: use --weights random or DIR."
        )
    from huggingface_hub import snapshot_download

    # Config, tokenizer and safetensors weights only (no TF/Flax/ONNX copies); older repos
    # that publish only pytorch_model.bin get that in a second, cache-aware call.
    patterns = ["*.json", "*.txt", "*.safetensors"]
    try:
        folder = Path(snapshot_download(arch.hub_id, allow_patterns=patterns))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(arch.hub_id, allow_patterns=[*patterns, "*.bin"]))
        return folder
    except Exception as exc:  # offline, DNS, HTTP, or missing from the cache
        raise BuildError(
            f"Could not fetch {arch.hub_id} from the Hugging Face Hub ({type(exc).__name__}); "
            "when offline, pass --weights DIR with a local checkpoint folder or --weights random."
        ) from exc


def _checkpoint_folder(arch: Architecture, root: Path) -> Path:
    """`root` itself when it is a checkpoint, else root/<key> or root/<hub name>."""
    if (root / "config.json").is_file():
        return root
    candidates = [root / arch.key]
    if arch.hub_id:
        candidates += [root / arch.hub_id.split("/")[-1], root / arch.hub_id.replace("/", "--")]
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    raise BuildError(
        f"No checkpoint for {arch.key!r} in {root}: expected config.json there or in one of "
        f"{', '.join(str(c.name) for c in candidates)}/ (write one with save_pretrained)."
    )


def _from_folder(arch: Architecture, folder: Path, weights: str, source: str) -> Checkpoint:
    import json

    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(
            f"{folder / 'config.json'} is unreadable ({exc}): re-save the checkpoint."
        ) from exc
    model_type = cfg.get("model_type")
    if model_type != arch.model_type:
        raise BuildError(
            f"{folder} holds a {model_type!r} checkpoint but {arch.key!r} needs "
            f"{arch.model_type!r}: point --weights at the right folder."
        )
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise BuildError(
            f"{folder} has no tokenizer (tokenizer.json or vocab.txt): save the tokenizer "
            "beside the weights with tokenizer.save_pretrained(folder)."
        )
    model = _load_model(arch, folder)
    tokenizer = _load_tokenizer(folder)
    return Checkpoint(
        architecture=arch,
        model=model,
        weights=weights,
        source=source,
        write_tokenizer=partial(_save_tokenizer, tokenizer),
        generated_tokenizer=False,
        input_names=arch.input_names,
    )


def _load_model(arch: Architecture, folder: Path) -> torch.nn.Module:
    import transformers

    cls = _model_class(arch.model_type)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity(logging.ERROR)
    try:
        model, info = cls.from_pretrained(
            str(folder), attn_implementation="eager", output_loading_info=True
        )
    except Exception as exc:  # corrupt safetensors, shape mismatch, missing weight file...
        raise BuildError(
            f"Could not load the {arch.model_type} weights in {folder} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
            "re-save the checkpoint with save_pretrained."
        ) from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = [k for k in info.get("missing_keys", ()) if k.endswith(_QA_HEADS)]
    if missing:
        raise BuildError(
            f"{folder} has no question-answering head ({', '.join(missing)} missing): "
            "use a checkpoint fine-tuned for extractive QA (…ForQuestionAnswering)."
        )
    # from_pretrained is annotated to return the model, but with output_loading_info it
    # returns (model, info): the class is held as Any, and the model typed here.
    loaded: torch.nn.Module = model.eval()
    return loaded


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise BuildError(
            f"Could not load the tokenizer in {folder} ({type(exc).__name__}): "
            "re-save it with tokenizer.save_pretrained(folder)."
        ) from exc


def _save_tokenizer(tokenizer: Any, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))

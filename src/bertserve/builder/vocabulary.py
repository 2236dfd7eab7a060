"""A generated cased WordPiece tokenizer, for models built without hub access.

It is NOT the checkpoint's real vocabulary: it keeps BERT's special-token ids ([PAD]=0,
[UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103), covers every printable ASCII and Latin-1
character alone and as a "##" continuation, adds word pieces the `tokenizers` trainer learns
from the parity samples, and pads with "[unusedN]" entries up to the model's vocabulary size.
Token counts therefore differ from the real tokenizer (words split into more pieces), which is
fine for random weights: the answers are meaningless anyway and the compute cost is the same.
"""

from __future__ import annotations

from pathlib import Path

from bertserve.builder.samples import QA_PAIRS

__all__ = ["generated_vocabulary", "write_generated_tokenizer"]

_SPECIALS_AT = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
_FIRST_FREE = 104


def _alphabet() -> list[str]:
    chars = [chr(c) for c in range(0x21, 0x7F)]  # printable ASCII, no space
    chars += [chr(c) for c in range(0xC0, 0x100) if chr(c).isalpha()]  # Latin-1 letters
    return chars


def generated_vocabulary(vocab_size: int) -> list[str]:
    """Vocabulary entries in id order, exactly `vocab_size` long."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    alphabet = _alphabet()
    minimum = _FIRST_FREE + 2 * len(alphabet)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size {vocab_size} is below the {minimum} a cased alphabet needs")
    vocab = [_SPECIALS_AT.get(i, f"[unused{i}]") for i in range(_FIRST_FREE)]
    vocab += alphabet + [f"##{c}" for c in alphabet]
    known = set(vocab)

    trainer_tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainer_tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    trainer_tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=alphabet,
        continuing_subword_prefix="##",
    )
    texts = [text for pair in QA_PAIRS for text in pair]
    trainer_tok.train_from_iterator(texts, trainer=trainer)
    learned = sorted(trainer_tok.get_vocab().items(), key=lambda kv: kv[1])
    for token, _ in learned:
        if len(vocab) >= vocab_size:
            break
        if token not in known:
            vocab.append(token)
            known.add(token)
    vocab += [f"[unused{i}]" for i in range(len(vocab), vocab_size)]
    return vocab


def write_generated_tokenizer(folder: Path, vocab_size: int, model_max_length: int) -> None:
    """Write a transformers-loadable cased BERT tokenizer (tokenizer.json, vocab.txt, ...)."""
    import transformers

    # transformers 5 folds the fast class into BertTokenizer; 4.x names it BertTokenizerFast.
    tokenizer_class = getattr(transformers, "BertTokenizerFast", transformers.BertTokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(generated_vocabulary(vocab_size)) + "\n", encoding="utf-8")
    tokenizer = tokenizer_class(
        vocab=str(vocab_file),
        do_lower_case=False,
        strip_accents=False,
        model_max_length=model_max_length,
    )
    tokenizer.save_pretrained(str(folder))

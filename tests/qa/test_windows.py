from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from bertserve.errors import ConfigError
from bertserve.qa.squad import load_squad, sample_path
from bertserve.qa.windows import Windower, WindowSettings

CONTEXT = (
    "The Harrowmere Light stands on a granite shelf at the northern tip of Tolland Island. "
    "It was designed by the engineer Mirela Costa and first lit on 14 October 1872."
)


def _context_tokens(window) -> list[tuple[int, int]]:  # noqa: ANN001
    return [
        tuple(o) for o, m in zip(window.offsets.tolist(), window.context_mask, strict=True) if m
    ]


def test_short_pair_is_one_window_with_template(tokenizer: Tokenizer) -> None:
    windower = Windower(tokenizer, WindowSettings(max_seq_len=128, doc_stride=32))
    [window] = windower.split(["Who designed it?"], [CONTEXT])
    tokens = [tokenizer.id_to_token(int(i)) for i in window.input_ids]
    assert tokens[:6] == ["[CLS]", "who", "designed", "it", "?", "[SEP]"]
    assert tokens[-1] == "[SEP]"
    assert window.token_type_ids.tolist() == [0] * 6 + [1] * (len(tokens) - 6)
    assert not window.context_mask[:6].any() and not window.context_mask[-1]
    # Offsets point into the context: each context token's text is the context slice.
    for token, (start, end) in zip(
        [t for t, m in zip(tokens, window.context_mask, strict=True) if m],
        _context_tokens(window),
        strict=True,
    ):
        assert CONTEXT[start:end].lower() == token.removeprefix("##")


def test_long_context_splits_into_overlapping_windows(tokenizer: Tokenizer) -> None:
    settings = WindowSettings(max_seq_len=64, doc_stride=16, max_query_len=16)
    context = " ".join([CONTEXT] * 8)
    windows = Windower(tokenizer, settings).split(["Who designed it?"], [context])
    assert len(windows) > 3
    assert all(len(w) <= 64 for w in windows)
    spans = [_context_tokens(w) for w in windows]
    for previous, current in zip(spans, spans[1:], strict=False):
        # consecutive windows share exactly doc_stride context tokens
        assert previous[-16:] == current[:16]
    covered = {span for window in spans for span in window}
    whole = Windower(tokenizer, WindowSettings(max_seq_len=512, doc_stride=16)).split(
        ["Who designed it?"], [context]
    )
    assert len(whole) == 1
    assert covered == set(_context_tokens(whole[0]))


def test_windows_keep_item_order(tokenizer: Tokenizer) -> None:
    settings = WindowSettings(max_seq_len=48, doc_stride=8, max_query_len=16)
    windows = Windower(tokenizer, settings).split(
        ["a?", "b?", "c?"], [CONTEXT, "Short one.", CONTEXT]
    )
    items = [w.item for w in windows]
    assert items == sorted(items)
    assert set(items) == {0, 1, 2}
    assert items.count(1) == 1


def test_long_question_is_cut_to_max_query_len(tokenizer: Tokenizer) -> None:
    settings = WindowSettings(max_seq_len=64, doc_stride=8, max_query_len=10)
    question = "who designed the light on the granite shelf at the northern tip of the island?"
    [window] = Windower(tokenizer, settings).split([question], ["Mirela Costa did."])
    question_tokens = [
        t
        for t, s in zip(window.token_type_ids, window.context_mask, strict=True)
        if t == 0 and not s
    ]
    assert len(question_tokens) == 10 + 2  # [CLS] + 10 question tokens + [SEP]


@pytest.mark.parametrize(
    ("max_seq_len", "doc_stride", "max_query_len", "message"),
    [
        (64, 8, 64, "leaves no room"),
        (128, 61, 64, "doc_stride 61"),
        (128, -1, 64, "doc_stride -1"),
        (128, 8, 0, "max_query_len"),
    ],
)
def test_bad_settings_are_config_errors(
    max_seq_len: int, doc_stride: int, max_query_len: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        WindowSettings(max_seq_len, doc_stride, max_query_len)


def test_tokenizer_without_pair_template_is_refused(tokenizer: Tokenizer) -> None:
    bare = Tokenizer.from_str(tokenizer.to_str())
    bare.post_processor = None
    with pytest.raises(ConfigError, match="pair template"):
        Windower(bare, WindowSettings())


def test_unreadable_tokenizer_file_is_config_error(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read tokenizer"):
        Windower.from_file(path, WindowSettings())


def test_context_of_only_unknown_characters_still_windows(tokenizer: Tokenizer) -> None:
    # [UNK] is a token: the window has context, so the model decides (no crash).
    [window] = Windower(tokenizer, WindowSettings()).split(["what?"], ["\u4e2d\u6587"])
    assert window.context_mask.sum() >= 1


def test_transformers_saved_tokenizer_works(tmp_path, tokenizer: Tokenizer) -> None:  # noqa: ANN001
    transformers = pytest.importorskip("transformers")
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (tmp_path / "vocab.txt").write_text("\n".join(t for t, _ in vocab) + "\n")
    fast = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    fast.save_pretrained(str(tmp_path / "saved"))
    windower = Windower.from_file(tmp_path / "saved" / "tokenizer.json", WindowSettings())
    [window] = windower.split(["Who designed it?"], [CONTEXT])
    assert window.context_mask.any()


def test_sample_has_a_context_longer_than_one_window(tokenizer: Tokenizer) -> None:
    _, examples = load_squad(sample_path())
    windower = Windower(tokenizer, WindowSettings(max_seq_len=384, doc_stride=128))
    counts = {e.context: len(windower.split([e.question], [e.context])) for e in examples}
    assert max(counts.values()) >= 2
    assert json.loads(sample_path().read_text())["version"] == "v2.0"


def test_context_without_tokens_yields_no_window(tokenizer: Tokenizer) -> None:
    # Zero-width spaces are dropped by BERT's normaliser: nothing is left to answer from.
    windows = Windower(tokenizer, WindowSettings()).split(
        ["what?", "who?"], ["\u200b\u200b", "Mirela Costa did."]
    )
    assert [w.item for w in windows] == [1]


def _encodings(tokenizer: Tokenizer, settings: WindowSettings, question: str, context: str):  # noqa: ANN202
    pairs = Tokenizer.from_str(tokenizer.to_str())
    pairs.enable_truncation(
        max_length=settings.max_seq_len, stride=settings.doc_stride, strategy="only_second"
    )
    first = pairs.encode(question, context)
    return [first, *first.overflowing]


@pytest.mark.parametrize(
    "template",
    [
        "[CLS] $A [SEP] $B:1 [SEP]:1",  # BERT: types derived from the context range
        "[CLS]:1 $A:1 [SEP]:0 $B:0 [SEP]:1",  # no two-block pattern: types read per window
    ],
)
def test_windows_agree_with_the_tokenizers_encodings(tokenizer: Tokenizer, template: str) -> None:
    from tokenizers import processors

    custom = Tokenizer.from_str(tokenizer.to_str())
    cls, sep = custom.token_to_id("[CLS]"), custom.token_to_id("[SEP]")
    custom.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair=template, special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    settings = WindowSettings(max_seq_len=64, doc_stride=16, max_query_len=16)
    context = " ".join([CONTEXT] * 4)
    windows = Windower(custom, settings).split(["Who designed it?"], [context])
    encodings = _encodings(custom, settings, "Who designed it?", context)
    assert len(windows) == len(encodings) > 1
    for window, enc in zip(windows, encodings, strict=True):
        assert window.input_ids.tolist() == enc.ids
        assert window.token_type_ids.tolist() == enc.type_ids
        assert window.context_mask.tolist() == [s == 1 for s in enc.sequence_ids]
        assert window.offsets.tolist() == [list(o) for o in enc.offsets]
        first, last = window.context.start, window.context.stop - 1
        assert window.char_span(first, last) == (enc.offsets[first][0], enc.offsets[last][1])

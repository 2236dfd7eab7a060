"""QA test helpers: a WordPiece tokenizer built from the shipped sample, and a tiny ONNX "QA model"
whose logits depend only on the token id, so tests can steer which span wins."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from bertserve.qa.squad import sample_path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CallModel = Callable[[str, str, dict[str, np.ndarray]], dict[str, np.ndarray]]


def sample_words() -> list[str]:
    document = json.loads(sample_path().read_text(encoding="utf-8"))
    texts = [
        text
        for article in document["data"]
        for paragraph in article["paragraphs"]
        for text in [paragraph["context"]] + [qa["question"] for qa in paragraph["qas"]]
    ]
    return sorted({w for t in texts for w in re.findall(r"\w+", t.lower())})


def make_tokenizer() -> Tokenizer:
    chars = [chr(c) for c in range(0x21, 0x7F)]
    vocab_list = SPECIALS + chars + [f"##{c}" for c in chars] + sample_words()
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tokenizer


def make_qa_onnx(path: Path, table: np.ndarray) -> Path:
    """ONNX graph: logits[b, s, :] = table[input_ids[b, s]]; start/end = the two columns.
    attention_mask and token_type_ids are accepted (as a BERT export's are) and unused."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
    types = helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"])
    start = helper.make_tensor_value_info("start_logits", TensorProto.FLOAT, ["batch", "seq"])
    end = helper.make_tensor_value_info("end_logits", TensorProto.FLOAT, ["batch", "seq"])
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["logits"]),
        helper.make_node("Split", ["logits", "split"], ["s3", "e3"], axis=2),
        helper.make_node("Squeeze", ["s3", "axis"], ["start_logits"]),
        helper.make_node("Squeeze", ["e3", "axis"], ["end_logits"]),
    ]
    inits = [
        numpy_helper.from_array(table.astype(np.float32), "table"),
        numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "split"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis"),
    ]
    graph = helper.make_graph(nodes, "toy_qa", [ids, mask, types], [start, end], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def steered_table(
    tokenizer: Tokenizer, start_word: str, end_word: str, seed: int = 0
) -> np.ndarray:
    """Small random logits, with a strong start on `start_word` and end on `end_word`."""
    rng = np.random.default_rng(seed)
    table = rng.normal(0.0, 0.1, size=(tokenizer.get_vocab_size(), 2))
    table[tokenizer.token_to_id(start_word), 0] = 8.0
    table[tokenizer.token_to_id(end_word), 1] = 8.0
    return table


def onnx_call_model(path: Path, log: list[tuple[int, ...]] | None = None) -> CallModel:
    """What the engine's call_model does, minus the server: run the ONNX model directly."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def call(name: str, version: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if log is not None:
            log.append(inputs["input_ids"].shape)
        return dict(zip(names, session.run(names, inputs), strict=True))

    return call


def write_repository(
    root: Path, tokenizer: Tokenizer, table: np.ndarray, params: dict[str, str]
) -> Path:
    """<root>/toy_qa/1/{model.onnx, tokenizer/tokenizer.json} and <root>/qa/{config.pbtxt, 1/}."""
    version = root / "toy_qa" / "1"
    (version / "tokenizer").mkdir(parents=True)
    tokenizer.save(str(version / "tokenizer" / "tokenizer.json"))
    make_qa_onnx(version / "model.onnx", table)
    (root / "toy_qa" / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 16\n'
        "dynamic_batching { max_queue_delay_microseconds: 1000 }\n"
        'parameters { key: "weights" value { string_value: "random" } }\n'
    )
    (root / "qa" / "1").mkdir(parents=True)
    lines = ['backend: "bertserve_qa"', "max_batch_size: 8", "dynamic_batching { }"]
    for key, value in {"qa_model": "toy_qa", **params}.items():
        lines.append(f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}')
    (root / "qa" / "config.pbtxt").write_text("\n".join(lines) + "\n")
    return root


#: (question, context, the message) of a bad second item: each fails its request alone.
BAD_ITEMS = [
    (b"", b"text", "input 'question' item 1 is empty"),
    (b"why?", b"\xc3\x28", "input 'context' item 1 is not valid UTF-8"),
    (b"why?", b"x" * 70_000, "input 'context' item 1 is 70000 bytes"),
]


def with_bad_second(question: bytes, context: bytes) -> dict[str, np.ndarray]:
    """A two-pair batch whose second pair is (question, context)."""
    return {
        "question": np.array([[b"ok?"], [question]], dtype=object),
        "context": np.array([[b"fine text"], [context]], dtype=object),
    }

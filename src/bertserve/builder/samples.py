"""Question/context pairs the parity check tokenizes (and the generated vocabulary learns from).

Real English text, so token ids, attention masks and segment ids look like a served request:
zeros or random ids would hide errors in padding, masking and segment handling.
"""

from __future__ import annotations

__all__ = ["QA_PAIRS"]

QA_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "Which architecture did Google release in 2018?",
        "In 2018 Google released BERT, a Transformer encoder pre-trained on BooksCorpus and "
        "English Wikipedia with a masked language model objective and next sentence prediction.",
    ),
    (
        "How many questions does SQuAD 2.0 contain?",
        "The Stanford Question Answering Dataset 2.0 combines the 100,000 questions of SQuAD 1.1 "
        "with over 50,000 unanswerable questions written adversarially by crowdworkers.",
    ),
    (
        "What does DistilBERT keep of BERT's performance?",
        "DistilBERT is a smaller Transformer trained by distillation: it has 40% fewer "
        "parameters, runs 60% faster and keeps 97% of BERT's language understanding.",
    ),
    (
        "Where does Triton look for models?",
        "Triton Inference Server loads models from a model repository. Each model has its own "
        "directory holding a config.pbtxt file and numbered version folders such as 1/.",
    ),
    (
        "What was the latency of BERT-base with TensorRT on a T4?",
        "On an n1-standard-4 machine with one NVIDIA T4 GPU, the TensorRT engine served "
        "BERT-base at 465 queries per second with a latency of 50 ms at the 90th percentile.",
    ),
    (
        "Who designed the Eiffel Tower?",
        "The Eiffel Tower in Paris was designed by the engineering company of Gustave Eiffel; "
        "Maurice Koechlin and Emile Nouguier drew the first plans in June 1884.",
    ),
    (
        "When did the Apollo 11 crew land on the Moon?",
        "Apollo 11 landed on the Moon on July 20, 1969. Neil Armstrong and Buzz Aldrin walked "
        "on the surface while Michael Collins stayed in lunar orbit aboard Columbia.",
    ),
    (
        "What is dynamic quantization?",
        "Dynamic quantization stores weights as 8-bit integers and computes the scale of each "
        "activation at run time, so no calibration data set is needed before deployment.",
    ),
)

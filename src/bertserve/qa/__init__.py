"""Question answering, pure parts: texts -> windows (texts, windows), padding plans (buckets),
logits -> answers (spans), SQuAD data and scores (squad, metrics, evaluation), and a client
for served pipelines (client). Nothing here imports the server; import the submodules."""

__all__: list[str] = []

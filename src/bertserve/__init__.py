"""bertserve: serve, measure and cost BERT question-answering models behind Triton's protocol."""

__version__ = "0.1.0"
__all__ = ["__version__"]

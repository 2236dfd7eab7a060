"""Why a build stopped. Every message says what to do next; the repository is left as it was."""

from __future__ import annotations

from bertserve.errors import BertserveError

__all__ = ["BuildError", "ParityError"]


class BuildError(BertserveError):
    """A build could not start or finish (bad checkpoint, unknown preset, occupied output,
    no disk space, ...). Nothing in the output repository was changed."""


class ParityError(BuildError):
    """A built variant disagrees with the transformers fp32 reference beyond its precision's
    tolerance."""

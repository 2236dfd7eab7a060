"""All-or-nothing output: models are built in a hidden folder inside the repository and moved
into place only when every variant passed; on any failure the repository is left as it was.

The staging folder is `<repo>/.bertserve-build-*` (same filesystem, so each move is an atomic
rename); repository scanners should skip entries whose names start with a dot.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from bertserve.builder.errors import BuildError

__all__ = ["STAGING_PREFIX", "Staging", "check_free_space"]

STAGING_PREFIX = ".bertserve-build-"


class Staging:
    """Use as a context manager; call `commit()` to publish, anything else discards."""

    def __init__(self, repository: Path, names: list[str], force: bool) -> None:
        self.repository = repository
        self.names = names
        occupied = [n for n in names if (repository / n).exists()]
        if occupied and not force:
            raise BuildError(
                f"{repository} already holds {', '.join(occupied)}: pass --force to replace "
                "them (the old models stay until the new ones are complete), or choose another "
                "--output."
            )
        if repository.exists() and not repository.is_dir():
            raise BuildError(f"--output {repository} is a file: give a folder path.")
        self._created: Path | None = None
        if not repository.exists():
            # Remember the topmost folder we create, to remove it again on failure.
            top = repository
            while not top.parent.exists():
                top = top.parent
            self._created = top
        try:
            repository.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=repository))
        except OSError as exc:
            raise BuildError(
                f"Cannot write to {repository} ({exc.strerror}): "
                "check permissions or choose another --output."
            ) from exc
        self.scratch = self.root / ".work"
        self.scratch.mkdir()
        self._committed = False

    def model_dir(self, name: str) -> Path:
        return self.root / name

    def commit(self) -> None:
        """Move every staged model into the repository, replacing older ones."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        replaced: list[tuple[Path, Path]] = []
        moved: list[Path] = []
        try:
            for name in self.names:
                target = self.repository / name
                if target.exists():
                    old = self.root / f".old-{name}"
                    os.replace(target, old)
                    replaced.append((old, target))
                os.replace(self.root / name, target)
                moved.append(target)
        except OSError as exc:
            for target in moved:  # undo: put the old models back
                shutil.rmtree(target, ignore_errors=True)
            for old, target in replaced:
                os.replace(old, target)
            raise BuildError(
                f"Could not move the built models into {self.repository} "
                f"({exc.strerror}); the repository is unchanged."
            ) from exc
        self._committed = True
        shutil.rmtree(self.root, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._created is not None:
            shutil.rmtree(self._created, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.discard()
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise BuildError(
                f"No space left on the device holding {self.repository}: free disk space or "
                "choose another --output; the repository is unchanged."
            ) from exc


def check_free_space(repository: Path, needed_bytes: int) -> None:
    """Refuse to start when the repository's filesystem obviously lacks room."""
    probe = repository
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise BuildError(
            f"The build needs about {needed_bytes / 1e9:.1f} GB free near {repository} but only "
            f"{free / 1e9:.1f} GB is: free disk space or choose another --output."
        )

"""Model repositories in object storage (s3://, gs://, az://), mirrored into a local cache.

The engine only ever loads from local folders: `RemoteRepository.sync()` makes the cache equal
to the bucket, fetching only the objects whose size or version tag (ETag, GCS generation)
changed since the last sync, checking every fetched object against the size and MD5 the store
lists, and moving each into place by rename once whole. A manifest records what the cache
holds, so a restarted server re-fetches nothing that is unchanged and anything a crash left
half-written. fsspec with s3fs / gcsfs / adlfs does the talking, with each store's usual
credentials (AWS_* and the instance or pod role; GOOGLE_APPLICATION_CREDENTIALS and the metadata
server; AZURE_STORAGE_*), and their emulators' variables (AWS_ENDPOINT_URL,
STORAGE_EMULATOR_HOST)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertserve.errors import ConfigError

__all__ = [
    "MANIFEST",
    "RemoteRepository",
    "RepositoryAccessDenied",
    "RepositoryIncomplete",
    "RepositoryNotFound",
    "RepositoryUnreachable",
    "SyncReport",
    "default_cache_dir",
    "is_remote",
]

log = logging.getLogger("bertserve.repository.remote")

#: URL scheme -> (fsspec protocol, the package that implements it).
_SCHEMES = {
    "s3": ("s3", "s3fs"),
    "gs": ("gs", "gcsfs"),
    "gcs": ("gs", "gcsfs"),
    "az": ("az", "adlfs"),
    "abfs": ("az", "adlfs"),
}
#: What the cache holds (relative path -> size and version tag); written last, by rename.
MANIFEST = ".bertserve-cache.json"
_PARTIAL = ".bertserve-partial"
_LOCK = ".bertserve-lock"
_HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")


class RepositoryUnreachable(ConfigError):
    """The store did not answer (network, endpoint, DNS)."""


class RepositoryAccessDenied(ConfigError):
    """The store answered but refused these credentials."""


class RepositoryNotFound(ConfigError):
    """No such bucket, or nothing under the path."""


class RepositoryIncomplete(ConfigError):
    """An object did not arrive whole (size or checksum differs from the listing)."""


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for a URL whose scheme names an object store (s3://, gs://, gcs://, az://, abfs://)."""
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and scheme.lower() in _SCHEMES


def default_cache_dir() -> Path:
    """$BERTSERVE_CACHE_DIR, else $XDG_CACHE_HOME/bertserve/repositories, else ~/.cache/..."""
    explicit = os.environ.get("BERTSERVE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bertserve" / "repositories"


@dataclass(frozen=True, slots=True)
class _Location:
    protocol: str
    package: str
    #: bucket/prefix without the scheme, no trailing slash
    root: str
    #: S3-compatible endpoint given in the URL, as tritonserver accepts it
    #: (s3://host:port/bucket/path, s3://https://host:port/bucket/path)
    endpoint: str | None


def _parse(url: str) -> _Location:
    scheme, _, rest = url.partition("://")
    protocol, package = _SCHEMES[scheme.lower()]
    endpoint = None
    if protocol == "s3":
        match = re.match(r"^(https?://)?([^/]+:\d+)/(.*)$", rest)
        if match:
            endpoint = (match.group(1) or "http://") + match.group(2)
            rest = match.group(3)
    root = rest.strip("/")
    if not root:
        raise ConfigError(f"{url}: name a bucket, e.g. {scheme}://my-bucket/models")
    return _Location(protocol, package, root, endpoint)


@dataclass(frozen=True, slots=True)
class _Object:
    size: int
    #: what says the object changed: ETag, GCS generation, else modification time
    tag: str
    #: hex MD5 of the content where the store lists one (not for multipart S3 uploads)
    md5: str | None


@dataclass(slots=True)
class SyncReport:
    """What one sync did; `seconds` covers listing and fetching."""

    url: str
    local: Path
    fetched: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_fetched: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.fetched or self.removed)


class RemoteRepository:
    """One bucket URL and its local mirror. `sync()` is safe to call from several threads and
    several processes sharing the cache (a file lock serializes them)."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        self.url = url.rstrip("/")
        self._location = _parse(self.url)
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        bucket = re.sub(r"[^A-Za-z0-9._-]", "_", self._location.root.split("/")[0])
        #: The folder the engine scans: a mirror of the bucket path.
        self.local = Path(cache_dir) / f"{self._location.protocol}-{bucket}-{digest}"
        self._fs: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteRepository({self.url!r} -> {str(self.local)!r})"

    # -- the store ---------------------------------------------------------------------------

    def _filesystem(self) -> Any:
        if self._fs is None:
            loc = self._location
            try:
                import fsspec

                # A fresh client per repository: fsspec's instance cache keys on the arguments
                # alone, and would hand back a client made for another endpoint or identity.
                options: dict[str, Any] = {"skip_instance_cache": True}
                if loc.endpoint:
                    options["client_kwargs"] = {"endpoint_url": loc.endpoint}
                if loc.protocol == "gs" and os.environ.get("STORAGE_EMULATOR_HOST"):
                    # As Google's own client does for an emulator: no credentials, so no
                    # lookup of them (which would ask a cloud metadata server).
                    options["token"] = "anon"
                self._fs = fsspec.filesystem(loc.protocol, **options)
            except ImportError as exc:
                raise ConfigError(
                    f"{self.url}: reading a model repository from {loc.protocol}:// needs "
                    f"{loc.package} ({exc}); install it with: pip install 'bertserve[storage]'"
                ) from None
        return self._fs

    def _list(self) -> dict[str, _Object]:
        """Relative path -> object, for every object under the URL (folder markers left out)."""
        root = self._location.root
        with self._translating("list"):
            found = self._filesystem().find(root, detail=True, withdirs=False)
        objects: dict[str, _Object] = {}
        for name, info in found.items():
            if not name.startswith(root + "/") or info.get("type") == "directory":
                continue
            rel = name[len(root) + 1 :]
            if not rel or rel.endswith("/"):  # a folder marker some consoles create
                continue
            objects[rel] = _describe(info)
        if not objects:
            raise RepositoryNotFound(
                f"{self.url} holds no objects: check the bucket name and path (it should hold "
                "<model>/config.pbtxt and <model>/<version>/ folders)"
            )
        return objects

    @contextlib.contextmanager
    def _translating(self, action: str) -> Iterator[None]:
        try:
            yield
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - each store library raises its own types
            raise _classify(exc, self.url, action) from exc

    # -- the cache ---------------------------------------------------------------------------

    def sync(self) -> SyncReport:
        """Make the local mirror equal to the bucket; fetch only what changed."""
        start = time.perf_counter()
        report = SyncReport(self.url, self.local)
        with self._lock, self._cache_lock():
            objects = self._list()
            manifest = self._read_manifest()
            stale = [
                rel
                for rel, obj in sorted(objects.items())
                if manifest.get(rel) != _entry(obj) or not _has_size(self.local / rel, obj.size)
            ]
            if stale:
                self._fetch(stale, objects)
                report.fetched = stale
                report.bytes_fetched = sum(objects[rel].size for rel in stale)
            report.removed = self._remove_extra(objects)
            self._write_manifest({rel: _entry(obj) for rel, obj in objects.items()})
        report.seconds = time.perf_counter() - start
        if report.changed:
            log.info(
                "%s: fetched %d object(s), %.1f MB, removed %d, in %.2f s",
                self.url,
                len(report.fetched),
                report.bytes_fetched / 1e6,
                len(report.removed),
                report.seconds,
            )
        return report

    def _fetch(self, rels: list[str], objects: dict[str, _Object]) -> None:
        partial = self.local / _PARTIAL
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        root = self._location.root
        remote = [f"{root}/{rel}" for rel in rels]
        temporary = [str(partial / f"{i:06d}") for i in range(len(rels))]
        try:
            with self._translating("read"):
                # One call for all: the store libraries fetch the files concurrently.
                self._filesystem().get(remote, temporary)
            for rel, tmp in zip(rels, temporary, strict=True):
                _verify(Path(tmp), objects[rel], f"{self.url}/{rel}")
            for rel, tmp in zip(rels, temporary, strict=True):
                target = self.local / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _remove_extra(self, objects: dict[str, _Object]) -> list[str]:
        removed: list[str] = []
        if not self.local.is_dir():
            return removed
        for path in sorted(self.local.rglob("*"), reverse=True):
            rel = path.relative_to(self.local).as_posix()
            if rel.split("/")[0].startswith(".bertserve-"):
                continue
            if path.is_dir():
                with contextlib.suppress(OSError):  # not empty: still holds objects
                    path.rmdir()
            elif rel not in objects:
                path.unlink()
                removed.append(rel)
        return removed

    def _read_manifest(self) -> dict[str, list[Any]]:
        try:
            data = json.loads((self.local / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("url") != self.url:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def _write_manifest(self, files: dict[str, list[Any]]) -> None:
        self.local.mkdir(parents=True, exist_ok=True)
        tmp = self.local / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps({"url": self.url, "files": files}, indent=1), encoding="utf-8")
        os.replace(tmp, self.local / MANIFEST)

    @contextlib.contextmanager
    def _cache_lock(self) -> Iterator[None]:
        self.local.mkdir(parents=True, exist_ok=True)
        with open(self.local / _LOCK, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _describe(info: dict[str, Any]) -> _Object:
    size = int(info.get("size") or info.get("Size") or 0)
    md5 = None
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if info.get("md5Hash"):  # GCS: base64 of the digest
        md5 = base64.b64decode(info["md5Hash"]).hex()
    elif _HEX_MD5.match(etag.lower()):  # S3: a single-part upload's ETag is its MD5
        md5 = etag.lower()
    else:
        content_md5 = (info.get("content_settings") or {}).get("content_md5")  # Azure
        if content_md5:
            md5 = bytes(content_md5).hex()
    tag = str(
        info.get("generation")
        or etag
        or info.get("LastModified")
        or info.get("last_modified")
        or info.get("mtime")
        or ""
    )
    return _Object(size=size, tag=tag, md5=md5)


def _entry(obj: _Object) -> list[Any]:
    return [obj.size, obj.tag]


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _verify(path: Path, obj: _Object, name: str) -> None:
    got = path.stat().st_size
    if got != obj.size:
        raise RepositoryIncomplete(
            f"{name}: fetched {got} bytes but the store lists {obj.size}; the object changed "
            "while it was fetched or the transfer broke off. It is fetched again at the next "
            "sync (poll mode) or start"
        )
    if obj.md5 is not None:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != obj.md5:
            raise RepositoryIncomplete(
                f"{name}: the fetched content's MD5 {digest.hexdigest()} differs from the "
                f"store's {obj.md5}; the object changed while it was fetched. It is fetched "
                "again at the next sync (poll mode) or start"
            )


_CREDENTIALS_HINT = (
    "give the server's identity read access (S3: s3:ListBucket and s3:GetObject; GCS: "
    "storage.objects.list and storage.objects.get, e.g. roles/storage.objectViewer; Azure: "
    "Storage Blob Data Reader) or set credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE, "
    "GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_CONNECTION_STRING)"
)


def _classify(exc: Exception, url: str, action: str) -> ConfigError:
    """One of the four repository errors, with what to do next."""
    text = f"{type(exc).__name__}: {exc}".strip()
    status = getattr(exc, "status_code", None) or getattr(exc, "code", None)
    if (
        isinstance(exc, PermissionError)
        or status in (401, 403)
        or str(exc).startswith("Forbidden")
        or type(exc).__name__ in ("ClientAuthenticationError", "NoCredentialsError")
    ):
        return RepositoryAccessDenied(
            f"no permission to {action} {url} ({text}): {_CREDENTIALS_HINT}"
        )
    if isinstance(exc, FileNotFoundError) or type(exc).__name__ == "ResourceNotFoundError":
        return RepositoryNotFound(
            f"{url}: the bucket or path does not exist ({text}); check the URL and the "
            "account or project it belongs to"
        )
    return RepositoryUnreachable(
        f"cannot reach {url} to {action} it ({text}); check the network path to the store "
        "and, for an S3-compatible store, the endpoint (AWS_ENDPOINT_URL, or "
        "s3://host:port/bucket/path)"
    )

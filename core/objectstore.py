"""Inputs in object storage: ``data_dir: s3://bucket/prefix`` (any fsspec URL), listed and read through fsspec.

``ObjectPath`` stands for the data folder (and, joined with a key, for one object) where the rest
of the engine expects a ``Path``: it joins with ``/``, has a ``name``, and ``str`` of it is its
URL. ``ObjectSource`` is the ``Source`` (``core.sources``) of every input under such a folder.
Both carry the URL and the storage options as plain values, never an open filesystem, so they
pickle to Dask workers, which open the filesystem themselves (fsspec keeps one per set of options).

Who an object is, for the ledger: its ``st_dev`` and ``st_ino`` are stable numbers hashed from
the bucket and from the whole URL (an object store has no inodes), its size is the listed size.
The ETag is deliberately not part of its identity: an object store has no append, so a log
that grows is uploaded again whole, with a new ETag. The ledger's content fingerprints decide
instead, as for a local file: an object whose first bytes and counted bytes are unchanged is
counted on from its offset; one rewritten otherwise is "replaced" and read again from its start.
A key copied to another name is a new input (its URL differs), not a rename.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from typing import Any, ClassVar

from core.errors import DataDirError
from core.sources import PLAIN, Compressed, ForwardStream, GzipStream, Handle, Range, Source, choose, digest

#: Bytes fetched beyond what a read asks for.
READ_AHEAD = 1024 * 1024


def is_url(value: object) -> bool:
    """Whether a ``data_dir`` value names object storage (``s3://...``) rather than a local folder."""
    return isinstance(value, ObjectPath) or (isinstance(value, str) and "://" in value)


@dataclass(frozen=True)
class ObjectPath:
    """A URL in object storage, with the storage options to reach it (JSON, so that it hashes and pickles)."""

    url: str
    options: str = "{}"

    @classmethod
    def of(cls, url: str, storage_options: dict[str, Any] | None = None) -> ObjectPath:
        return cls(url.rstrip("/"), json.dumps(storage_options or {}, sort_keys=True))

    def __truediv__(self, name: str | os.PathLike[str]) -> ObjectPath:
        return ObjectPath(f"{self.url}/{os.fspath(name)}", self.options)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def resolve(self) -> ObjectPath:
        return self

    def sibling(self, name: str, other: str) -> ObjectPath:
        """The object named ``other`` in the data folder where this one is named ``name``."""
        if not self.url.endswith("/" + name):
            raise ValueError(f"{self.url} is not named {name}")
        return ObjectPath(self.url[: len(self.url) - len(name)] + other, self.options)

    def stat(self) -> os.stat_result:
        """Who the object is now, as ``ObjectSource.identify`` says; ``OSError`` if it cannot be read."""
        return ObjectSource(self.options).identify(self)

    def source(self) -> Source:
        """The source that reads this object: gzip or plain."""
        return choose(self.name, sources_for(self, ()))

    def __fspath__(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url


def filesystem(url: str, options: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` with these storage options, and the path within it."""
    import fsspec.core  # here: a local run never needs it

    return fsspec.core.url_to_fs(url, **json.loads(options))


def _number(text: str) -> int:
    """A stable non-negative 63-bit number for ``text``: an object's stand-in device or inode."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def _oserror(url: str, exc: Exception) -> OSError:
    """What a failed call into the store raised, as the ``OSError`` the engine reports as a file error."""
    if isinstance(exc, OSError):
        return exc
    return OSError(errno.EIO, f"{type(exc).__name__}: {exc}", url)


@dataclass(frozen=True)
class ObjectSource:
    """Objects under an ``ObjectPath``: sized by their listing, read by range requests, split like plain files."""

    name: ClassVar[str] = "object"
    seekable: ClassVar[bool] = True
    copies: ClassVar[bool] = False
    options: str = "{}"

    def matches(self, name: str) -> bool:
        return True  # only a run over object storage lists it, and then every input is an object

    def identify(self, path: str | os.PathLike[str]) -> os.stat_result:
        url = os.fspath(path)
        fs, key = filesystem(url, self.options)
        try:
            info = fs.info(key)
        except Exception as exc:  # noqa: BLE001  (a third-party client: anything it raises is a read error)
            raise _oserror(url, exc) from None
        if info.get("type") != "file":
            raise OSError(errno.EISDIR, "is a folder in the object store, not an object", url)
        modified = info.get("LastModified") or info.get("mtime")
        mtime = int(modified.timestamp()) if hasattr(modified, "timestamp") else int(modified or 0)
        bucket = url.split("://", 1)[0] + "://" + key.split("/", 1)[0]
        return os.stat_result((stat.S_IFREG | 0o444, _number(url), _number(bucket), 1, 0, 0,
                               int(info["size"]), mtime, mtime, mtime))

    def size(self, path: str | os.PathLike[str], info: os.stat_result | None = None) -> int:
        return (info or self.identify(path)).st_size

    def fingerprint(self, path: str | os.PathLike[str], length: int, start: int = 0) -> str:
        url = os.fspath(path)
        fs, key = filesystem(url, self.options)
        try:
            return digest(fs.cat_file(key, start=start, end=start + length) if length else b"")
        except Exception as exc:  # noqa: BLE001
            raise _oserror(url, exc) from None

    def open(self, path: str | os.PathLike[str], offset: int) -> Handle:
        return _open(os.fspath(path), self.options, offset)  # type: ignore[no-any-return]

    def split(self, path: str | os.PathLike[str], start: int, size: int, range_bytes: int) -> list[Range]:
        return PLAIN.split(path, start, size, range_bytes)


@dataclass(frozen=True)
class GzipObjectSource(Compressed):
    """Gzip objects (``*.gz``) under an ``ObjectPath``: decompressed as they are fetched, as a local ``.gz`` is.

    An object is who ``ObjectSource`` says it is. Its versions, whose decompressed sizes and resume
    points are kept (``core.sources.Compressed``), are told apart by their ETags: an upload within
    the same second and of the same size may hold other bytes.
    """

    name: ClassVar[str] = "gzip-object"
    pattern: ClassVar[str] = "*.gz"
    options: str = "{}"

    def identify(self, path: str | os.PathLike[str]) -> os.stat_result:
        return ObjectSource(self.options).identify(path)

    def version(self, path: str | os.PathLike[str], info: os.stat_result | None = None) -> tuple[Any, ...]:
        url = os.fspath(path)
        fs, key = filesystem(url, self.options)
        try:
            return _version(url, fs.info(key))
        except Exception as exc:  # noqa: BLE001
            raise _oserror(url, exc) from None

    def stream(self, path: str | os.PathLike[str]) -> ForwardStream:
        url = os.fspath(path)
        handle = _open(url, self.options, 0)
        # The version the handle reads (s3fs keeps the object's details from when it was opened).
        details = getattr(handle, "details", None)
        version = _version(url, details) if isinstance(details, dict) and "size" in details else self.version(url)
        return GzipStream(url, raw=handle, version=version)


def _version(url: str, info: dict[str, Any]) -> tuple[Any, ...]:
    return url, int(info["size"]), str(info.get("ETag") or info.get("etag") or info.get("mtime") or "")


def _open(url: str, options: str, offset: int) -> Any:
    """The object at ``url`` opened for reading at ``offset``: ``OSError`` naming it if it cannot be."""
    fs, key = filesystem(url, options)
    try:
        # Read-ahead keeps the last bytes fetched, so the reader's seek back to a partial line costs
        # no request; each read fetches what it asks for plus READ_AHEAD (s3fs's default, 50 MiB,
        # would fetch far past the end of a worker's range).
        handle = fs.open(key, "rb", cache_type="readahead", block_size=READ_AHEAD)
        handle.seek(offset)
    except Exception as exc:  # noqa: BLE001  (a third-party client: anything it raises is a read error)
        raise _oserror(url, exc) from None
    return handle


def sources_for(data_dir: object, sources: tuple[Source, ...]) -> tuple[Source, ...]:
    """The sources of a run over ``data_dir``: an object store's first (they read every input there, gzip
    objects and the rest)."""
    if not isinstance(data_dir, ObjectPath) or any(isinstance(s, ObjectSource) for s in sources):
        return sources
    return (GzipObjectSource(data_dir.options), ObjectSource(data_dir.options), *sources)


def listing(root: ObjectPath, recursive: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """The object names under ``root`` (relative to it, sorted) and the names passed over, with why.

    Listed afresh each time (a watcher polls it). ``DataDirError`` naming the URL when it cannot be
    listed: no such bucket, no credentials, no server.
    """
    fs, base = filesystem(root.url, root.options)
    base = base.rstrip("/")
    try:
        fs.invalidate_cache()
        found = fs.find(base, maxdepth=None if recursive else 1, withdirs=True, detail=True)
    except Exception as exc:  # noqa: BLE001
        raise DataDirError(f"data folder '{root.url}' cannot be listed: {_reason(exc)}") from None
    names, skipped = [], []
    for key, info in sorted(found.items()):
        name = key[len(base):].lstrip("/")
        if not name or key.endswith("/"):
            continue  # the prefix itself, or a zero-byte "folder" marker
        if any(part.startswith(".") for part in name.split("/")[:-1]):
            continue  # under a hidden "folder", which a local walk does not enter either
        if info.get("type") != "file":
            if not recursive and not name.startswith("."):
                skipped.append((name, "is a subfolder (set 'recursive: true' to read subfolders)"))
            continue
        names.append(name)
    return names, skipped


def check(root: ObjectPath) -> None:
    """Raise ``DataDirError`` unless ``root`` can be listed."""
    fs, base = filesystem(root.url, root.options)
    bucket = base.split("/", 1)[0]
    try:
        fs.invalidate_cache()
        fs.ls(base.rstrip("/") if "/" in base.strip("/") else bucket, detail=False)
    except FileNotFoundError:
        if "/" in base.strip("/") and fs.exists(bucket):
            return  # a prefix with no object yet: an empty folder
        raise DataDirError(f"data folder '{root.url}' cannot be listed: bucket '{bucket}' does not exist") from None
    except Exception as exc:  # noqa: BLE001
        raise DataDirError(f"data folder '{root.url}' cannot be listed: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"

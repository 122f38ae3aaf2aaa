"""A file format for saved state that cannot run code, with a checksum over all of it.

What it stores is a tree of plain values: ``None``, booleans, integers, floats, strings, bytes,
lists, tuples, sets, dicts (any of these as keys), ``Counter`` and ``deque``, numpy scalars and
arrays (never of Python objects), Polars frames and series (as Arrow IPC), and objects of the
classes it is told about. An object is stored as its class's name and its state (``__getstate__``,
or its attributes), and read back as ``cls.__new__(cls)`` given that state (``__setstate__``, or
its attributes). Reading never imports anything or calls anything a file names: a class name
that is not among the classes the reader was given is an error, like a bad checksum.

The layout: ``MAGIC``, the format version (4 bytes), the number of blobs (4 bytes), each blob
(its length in 8 bytes, then its bytes), the tree as JSON (its length, then it), and the SHA-256
of everything before it. All integers are little-endian. Frames, arrays and bytes are blobs that
the tree refers to by number; each is written as soon as it is made, so that saving holds one
frame's bytes at a time, not the whole file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import polars as pl

MAGIC = b"OMPSTATE"
VERSION = 1
_DIGEST = 32
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_HEAD = len(MAGIC) + 2 * _U32.size


class StateError(ValueError):
    """A saved state that cannot be read back: torn, altered, from another version, or naming an unknown class."""


class UnsafeValue(TypeError):
    """A value the format has no safe way to store; ``where`` is the path to it from the root."""

    def __init__(self, value: object, where: str) -> None:
        kind = type(value)
        super().__init__(f"{where}: a {kind.__module__}.{kind.__qualname__} cannot be saved safely")
        self.where = where


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


#: Classes every reader knows, besides those it is given (see ``register``).
_REGISTERED: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: objects of ``cls`` may be saved and read back (its state must be safe too)."""
    _REGISTERED[class_name(cls)] = cls
    return cls


def classes(extra: Iterable[type] = ()) -> dict[str, type]:
    """The registered classes and ``extra``, by name: what a reader may make."""
    return {**_REGISTERED, **{class_name(cls): cls for cls in extra}}


class Writer:
    """Encodes values into one file: ``encode`` parts (each may be refused on its own), then ``write`` the whole.

    A part's tree can be placed in a later value as ``Encoded(tree)``, so that a value is walked
    (and its state taken) once, also where the caller leaves out the parts that cannot be stored.
    """

    def __init__(self, known: dict[str, type]) -> None:
        self._blobs: list[Callable[[], bytes]] = []
        self._encoder = _Encoder(known, self._blobs)

    def encode(self, value: Any, where: str = "state") -> Any:
        """``value``'s tree; raises ``UnsafeValue`` for what cannot be stored, and then keeps nothing of it."""
        mark = len(self._blobs)
        try:
            return self._encoder.encode(value, where)
        except UnsafeValue:
            del self._blobs[mark:]
            raise

    def write(self, tree: Any, out: IO[bytes]) -> None:
        """Write the blobs made so far and ``tree`` to ``out``, then the checksum."""
        digest = hashlib.sha256()

        def put(data: bytes) -> None:
            digest.update(data)
            out.write(data)

        put(MAGIC + _U32.pack(VERSION) + _U32.pack(len(self._blobs)))
        for make in self._blobs:
            data = make()
            put(_U64.pack(len(data)))
            put(data)
        text = json.dumps(tree, separators=(",", ":"), allow_nan=False).encode("utf-8")
        put(_U64.pack(len(text)))
        put(text)
        out.write(digest.digest())


@dataclass(frozen=True)
class Encoded:
    """A tree ``Writer.encode`` made, placed as it is in a value encoded later by the same writer."""

    tree: Any


def dump(value: Any, out: IO[bytes], known: dict[str, type]) -> None:
    """Write ``value`` to ``out``; raises ``UnsafeValue`` (before writing anything) for what cannot be stored."""
    writer = Writer(known)
    writer.write(writer.encode(value), out)


def dumps(value: Any, known: dict[str, type]) -> bytes:
    buffer = io.BytesIO()
    dump(value, buffer, known)
    return buffer.getvalue()


def loads(data: bytes, known: dict[str, type]) -> Any:
    """The value ``dump`` wrote; raises ``StateError`` saying what is wrong with anything else."""
    view = memoryview(data)
    if len(view) < _HEAD + _U64.size + _DIGEST or bytes(view[: len(MAGIC)]) != MAGIC:
        raise StateError("not a saved state (no header)")
    if hashlib.sha256(view[:-_DIGEST]).digest() != bytes(view[-_DIGEST:]):
        raise StateError("checksum mismatch: the file was altered or torn")
    version, count = _U32.unpack_from(view, len(MAGIC))[0], _U32.unpack_from(view, len(MAGIC) + _U32.size)[0]
    if version != VERSION:
        raise StateError(f"format version {version}, this program reads {VERSION}")
    at, end, blobs = _HEAD, len(view) - _DIGEST, []
    for _ in range(count + 1):  # the blobs, then the tree
        if at + _U64.size > end:
            raise StateError("truncated")
        (size,) = _U64.unpack_from(view, at)
        at += _U64.size
        if size > end - at:
            raise StateError("truncated")
        blobs.append(view[at : at + size])
        at += size
    if at != end:
        raise StateError("trailing bytes")
    try:
        tree = json.loads(bytes(blobs.pop()))
        return _Decoder(known, blobs).decode(tree)
    except StateError:
        raise
    except Exception as exc:  # the checksum matched, so this is a writer's bug or another version's file
        raise StateError(f"unreadable: {type(exc).__name__}: {exc}") from exc


class _Encoder:
    def __init__(self, known: dict[str, type], blobs: list[Callable[[], bytes]]) -> None:
        self.known = known
        self.blobs = blobs

    def blob(self, make: Callable[[], bytes]) -> int:
        self.blobs.append(make)
        return len(self.blobs) - 1

    def encode(self, value: Any, where: str) -> Any:  # noqa: PLR0911 - one case per kind of value
        if value is None or isinstance(value, (bool, str)):
            return value
        if type(value) is Encoded:
            return value.tree
        if isinstance(value, int) and type(value) is int:
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, np.generic):
            if value.dtype.hasobject:
                raise UnsafeValue(value, where)
            return {"$np": value.dtype.str, "v": self.encode(value.item(), where)}
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
            return {"$bytes": self.blob(lambda: data)}
        if isinstance(value, pl.DataFrame):
            return {"$frame": self.blob(lambda: _ipc(value))}
        if isinstance(value, pl.Series):
            return {"$series": self.blob(lambda: _ipc(value.to_frame())), "name": value.name}
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise UnsafeValue(value, where)
            array = np.ascontiguousarray(value)
            return {"$array": self.blob(array.tobytes), "dtype": array.dtype.str, "shape": list(array.shape)}
        if type(value) is list:
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if type(value) is tuple:
            return {"$tuple": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if type(value) in (set, frozenset):
            items = [self.encode(v, f"{where}{{}}") for v in value]
            return {"$set" if type(value) is set else "$frozenset": items}
        if type(value) is deque:
            return {"$deque": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)], "maxlen": value.maxlen}
        if type(value) in (dict, Counter):
            pairs = [[self.encode(k, f"{where}.<key>"), self.encode(v, f"{where}[{k!r}]")] for k, v in value.items()]
            return {"$dict" if type(value) is dict else "$counter": pairs}
        name = class_name(type(value))
        if self.known.get(name) is not type(value):
            raise UnsafeValue(value, where)
        state = value.__getstate__()
        return {"$object": name, "state": self.encode(state, f"{where}<{type(value).__name__}>")}


class _Decoder:
    def __init__(self, known: dict[str, type], blobs: list[memoryview]) -> None:
        self.known = known
        self.blobs = blobs

    def blob(self, index: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self.blobs):
            raise StateError(f"no blob {index!r}")
        return self.blobs[index]

    def decode(self, node: Any) -> Any:  # noqa: PLR0911, PLR0912 - one case per kind of value
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict) or len(node) not in (1, 2, 3):
            raise StateError(f"unexpected node {str(node)[:80]}")
        tag = next(iter(node))
        body = node[tag]
        if tag == "$dict":
            return {self.decode(k): self.decode(v) for k, v in body}
        if tag == "$counter":
            return Counter({self.decode(k): self.decode(v) for k, v in body})
        if tag == "$tuple":
            return tuple(self.decode(v) for v in body)
        if tag == "$set":
            return {self.decode(v) for v in body}
        if tag == "$frozenset":
            return frozenset(self.decode(v) for v in body)
        if tag == "$deque":
            return deque((self.decode(v) for v in body), maxlen=node["maxlen"])
        if tag == "$float":
            return float(body)
        if tag == "$bytes":
            return bytes(self.blob(body))
        if tag == "$frame":
            return pl.read_ipc(io.BytesIO(self.blob(body)))
        if tag == "$series":
            return pl.read_ipc(io.BytesIO(self.blob(body))).to_series().alias(node["name"])
        if tag in ("$np", "$array"):
            dtype = np.dtype(node["dtype"] if tag == "$array" else body)
            if dtype.hasobject:
                raise StateError("an array of Python objects")
            if tag == "$np":
                return dtype.type(self.decode(node["v"]))
            return np.frombuffer(self.blob(body), dtype=dtype).reshape(node["shape"]).copy()
        if tag == "$object":
            cls = self.known.get(body)
            if cls is None:
                raise StateError(f"unknown class {body!r}")
            obj = cls.__new__(cls)
            state = self.decode(node["state"])
            if hasattr(obj, "__setstate__"):
                obj.__setstate__(state)
            elif isinstance(state, dict):
                obj.__dict__.update(state)
            else:
                raise StateError(f"{body}: unexpected state")
            return obj
        raise StateError(f"unknown tag {tag!r}")


def _ipc(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    return buffer.getvalue()

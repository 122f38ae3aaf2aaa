"""Byte strings read eight bytes at a time, and the 64-bit mixing the compiled modules do, in numpy.

The C code reads a word with ``memcpy`` (little-endian on the machines it is built for) and lets
its uint64 arithmetic wrap at 2**64; numpy's uint64 arrays wrap the same way, so a hash computed
here is the C's, bit for bit. Scalar numpy arithmetic would warn on overflow, so only arrays
are mixed here.
"""

from __future__ import annotations

import numpy as np
import polars as pl

# xxHash64's primes and MurmurHash3's finaliser constants, as in core/_scan.c and core/_tally.c.
P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)
_F1 = np.uint64(0xFF51AFD7ED558CCD)
_F2 = np.uint64(0xC4CEB9FE1A85EC53)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


def rotl(x: np.ndarray, bits: int) -> np.ndarray:
    """Each word rotated left by ``bits`` (0 < bits < 64)."""
    return (x << np.uint64(bits)) | (x >> np.uint64(64 - bits))


def shr(x: np.ndarray, bits: int) -> np.ndarray:
    return x >> np.uint64(bits)


def finish(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser."""
    h = h ^ shr(h, 33)
    h = h * _F1
    h = h ^ shr(h, 33)
    h = h * _F2
    return h ^ shr(h, 33)


def low_bytes(count: np.ndarray) -> np.ndarray:
    """Masks keeping each word's first ``count`` bytes (all of them from 8 on)."""
    bits = np.minimum(count, 7).astype(np.uint64) * np.uint64(8)
    return np.where(count >= 8, _ALL, (np.uint64(1) << bits) - np.uint64(1))


def as_words(values: np.ndarray) -> np.ndarray:
    """Int64 or UInt64 values as the uint64 words with the same bits."""
    return np.ascontiguousarray(values).view(np.uint64)


class Texts:
    """Byte strings laid end to end: where each starts, how long it is, and its words."""

    def __init__(self, flat: bytes, lengths: np.ndarray) -> None:
        self.lengths = lengths.astype(np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths
        # A word may start at any byte up to 8 past the end (the rest of a short string's view: cleared).
        padded = np.frombuffer(flat + bytes(16), dtype=np.uint8)
        # Every byte offset as the start of a little-endian word: an overlapping, unaligned view.
        self._words = np.ndarray((len(flat) + 9,), dtype="<u8", buffer=padded, strides=(1,))

    @classmethod
    def of(cls, strings: pl.Series) -> Texts:
        """The UTF-8 bytes of a String Series without nulls."""
        flat = strings.str.join("").cast(pl.Binary).item() if len(strings) else b""
        return cls(flat, strings.str.len_bytes().to_numpy())

    def words(self, at: np.ndarray, count: np.ndarray | None = None) -> np.ndarray:
        """The word starting ``at`` bytes into the layout; with ``count``, only its first ``count`` bytes."""
        words = self._words[at].astype(np.uint64)
        return words if count is None else words & low_bytes(count)


def own_bytes(strings: pl.Expr) -> pl.Expr:
    """A string column copied into buffers of its own.

    Polars' strings are views into shared buffers, and a column filtered, split off or gathered
    from another keeps the other's buffers whole: the parts of every line of a chunk, say, of
    which the records are only some. Kept in a rule's state, they would hold that memory, and a
    checkpoint saved from it the text of lines that are no records (a card number in a malformed
    line); the compiled modules copy out only the bytes they hand over. A concatenation writes
    new strings (of one column alone, it would not).
    """
    return pl.concat_str(strings, pl.lit(""))

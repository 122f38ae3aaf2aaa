"""The saved-state format (``core.safestate``): what it stores, and what it refuses to read or write."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

from core import safestate
from core.counts import KeyCounts
from core.redact import Redactor


@dataclass
class Point:
    x: int
    label: str


KNOWN = safestate.classes([Point])


def round_trip(value):
    return safestate.loads(safestate.dumps(value, KNOWN), KNOWN)


def test_every_kind_of_value_reads_back_equal_and_of_the_same_type():
    frame = pl.DataFrame({"key": ["a", None, "é"], "n": [1, 2, 3]}, schema={"key": pl.String(), "n": pl.Int64()})
    frame = frame.with_columns(file=pl.lit("f").cast(pl.Categorical))
    value = {
        "none": None, "flag": True, "big": 2**70, "neg": -5, "float": 0.1, "nan": math.nan, "inf": -math.inf,
        "text": "a\udcff surrogate", "bytes": b"\x00\xff", "list": [1, [2, 3]], "tuple": (1, "a"), "set": {1, 2},
        "frozen": frozenset({"x"}), "counter": Counter({"too_long": 3}), "deque": deque([1, 2], maxlen=5),
        (1, "tuple key"): "value", 7: "int key", "np_int": np.int64(9), "np_float": np.float32(1.5),
        "array": np.arange(6, dtype=np.float32).reshape(2, 3), "bools": np.array([True, False]),
        "frame": frame, "series": pl.Series("s", [1.5, None]), "point": Point(3, "p"),
    }
    back = round_trip(value)
    assert back.keys() == value.keys()
    for key, original in value.items():
        copy = back[key]
        assert type(copy) is type(original), key
        if isinstance(original, float) and math.isnan(original):
            assert math.isnan(copy)
        elif isinstance(original, np.ndarray):
            assert copy.dtype == original.dtype and np.array_equal(copy, original)
        elif isinstance(original, pl.DataFrame):
            assert copy.schema == original.schema and copy.equals(original)
        elif isinstance(original, pl.Series):
            assert copy.name == original.name and copy.equals(original)
        else:
            assert copy == original, key
    assert back["deque"].maxlen == 5


def test_core_state_classes_read_back_as_they_were():
    counts = KeyCounts(3)
    counts.add(pl.Series(["a", "b", "a", "c", "d", "a"]))
    back = round_trip({"counts": counts, "redactor": Redactor(patterns=("x+",))})
    assert back["counts"].top(2) == counts.top(2) and back["counts"].approximate
    assert back["redactor"] == Redactor(patterns=("x+",))


def test_a_class_the_reader_was_not_given_is_refused_and_nothing_is_made():
    data = safestate.dumps({"p": Point(1, "a")}, KNOWN)
    with pytest.raises(safestate.StateError, match=r"unknown class '(tests\.)?test_safestate\.Point'"):
        safestate.loads(data, safestate.classes())


def test_a_file_naming_a_function_cannot_call_it(tmp_path):
    # What a crafted file could ask for: os.system with an argument. The reader knows no such
    # class, and a checksum that matches does not make it one.
    marker = tmp_path / "ran"
    tree = {"$object": "posix.system", "state": f"touch {marker}"}
    data = _file([], tree)
    with pytest.raises(safestate.StateError, match="unknown class 'posix.system'"):
        safestate.loads(data, safestate.classes([type(os.system)]))
    assert not marker.exists()


def test_an_array_of_python_objects_is_refused_both_ways():
    with pytest.raises(safestate.UnsafeValue, match=r"state\['a'\]"):
        safestate.dumps({"a": np.array([object()])}, KNOWN)
    data = _file([b"\x00" * 8], {"$array": 0, "dtype": "|O", "shape": [1]})
    with pytest.raises(safestate.StateError, match="Python objects"):
        safestate.loads(data, KNOWN)


def test_a_value_it_cannot_store_is_named_with_its_path_before_anything_is_written():
    out = bytearray()

    class Sink:
        def write(self, data):
            out.extend(data)

    with pytest.raises(safestate.UnsafeValue) as raised:
        safestate.dump({"rules": [Point(1, "a"), lambda: None]}, Sink(), KNOWN)
    assert raised.value.where == "state['rules'][1]"
    assert "builtins.function cannot be saved safely" in str(raised.value)
    assert not out


@pytest.mark.parametrize("cut", [0, 5, 20, -1, -33])
def test_a_torn_file_is_refused(cut):
    data = safestate.dumps({"p": Point(1, "a"), "f": pl.DataFrame({"a": [1]})}, KNOWN)
    with pytest.raises(safestate.StateError):
        safestate.loads(data[:cut], KNOWN)


def test_any_flipped_byte_is_caught_by_the_checksum():
    data = safestate.dumps({"p": Point(1, "a"), "f": pl.DataFrame({"a": [1, 2, 3]}), "b": b"xyz"}, KNOWN)
    for at in range(len(data)):
        changed = bytearray(data)
        changed[at] ^= 0x20
        with pytest.raises(safestate.StateError):
            safestate.loads(bytes(changed), KNOWN)


def test_another_format_version_is_refused():
    data = bytearray(safestate.dumps([1], KNOWN))
    data[len(safestate.MAGIC)] = 9
    with pytest.raises(safestate.StateError, match="format version 9"):
        safestate.loads(_reseal(bytes(data)), KNOWN)


def _file(blobs: list[bytes], tree: object) -> bytes:
    """A well-formed file (right checksum) holding ``tree``: what someone crafting one could write."""
    body = safestate.MAGIC + struct.pack("<II", safestate.VERSION, len(blobs))
    for blob in blobs:
        body += struct.pack("<Q", len(blob)) + blob
    text = json.dumps(tree).encode()
    return _reseal(body + struct.pack("<Q", len(text)) + text + b"\x00" * 32)


def _reseal(data: bytes) -> bytes:
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


def test_the_readme_example_of_a_registered_class_saves_what_it_is_made_from():
    from tests.test_plugins import _readme_block

    namespace: dict = {"__name__": "readme_example"}
    exec(_readme_block("### Rule state", "python"), namespace)  # noqa: S102 - the README's own code
    matcher = namespace["Matcher"]("ORD-[0-9]+")
    known = safestate.classes()
    back = safestate.loads(safestate.dumps({"m": matcher}, known), known)["m"]
    assert type(back) is namespace["Matcher"] and back.pattern == "ORD-[0-9]+"
    assert back.compiled.search("order ORD-42 paid").group() == "ORD-42"

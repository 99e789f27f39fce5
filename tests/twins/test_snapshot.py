"""Snapshots: bit-exact round trips, deterministic bytes, and a clear SnapshotError for
anything that is not a snapshot this code wrote."""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
from typing import Any

import numpy as np
import pytest

from twins.snapshot import MAGIC, SnapshotError, pack, prefixed, section, unpack

RNG = np.random.default_rng(20240611)

ARRAYS: dict[str, np.ndarray] = {
    "float64": RNG.normal(size=(3, 5)) * 1e4,
    "float64 specials": np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, 1.7976931348623157e308]),
    "float32": RNG.normal(size=7).astype(np.float32),
    "int64 extremes": np.array([np.iinfo(np.int64).min, -1, 0, 1, np.iinfo(np.int64).max]),
    "uint8": RNG.integers(0, 256, size=(4, 4), dtype=np.uint8),
    "bool": RNG.random(11) < 0.5,
    "big-endian float64": np.arange(6, dtype=">f8") / 7.0,
    "complex128": RNG.normal(size=3) + 1j * RNG.normal(size=3),
    "0-d float64": np.array(2.5),
    "0-d int64": np.array(-7, dtype=np.int64),
    "0-d bool": np.array(True),
    "empty float64": np.zeros(0),
    "empty 2-d": np.zeros((3, 0)),
    "empty int64 (0, 4)": np.zeros((0, 4), dtype=np.int64),
    "fortran order": np.asfortranarray(RNG.normal(size=(4, 3))),
    "strided view": np.arange(40.0).reshape(8, 5)[::2, 1::2],
    "3-d": RNG.normal(size=(2, 3, 4)),
}


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )


@pytest.mark.parametrize("name", list(ARRAYS))
def test_array_round_trip_is_bit_exact(name: str) -> None:
    original = ARRAYS[name]
    kept = original.copy()
    state = unpack(pack({"x": original, "other": np.arange(3)}))
    restored = state["x"]
    assert isinstance(restored, np.ndarray)
    assert restored.dtype == original.dtype, "dtype changed"
    assert restored.shape == original.shape, "shape changed"
    assert _same_bits(restored, original)
    assert _same_bits(original, kept), "pack changed its input"
    assert restored.flags.writeable and restored.flags.owndata
    assert _same_bits(state["other"], np.arange(3))


# 0-d arrays have their own (failing) cases above; keep them out of the combined checks so
# that those report only what they are about.
NOT_0D = {k: v for k, v in ARRAYS.items() if v.ndim > 0}


def test_all_arrays_together_round_trip_and_repack_to_the_same_bytes() -> None:
    blob = pack(NOT_0D)
    state = unpack(blob)
    assert sorted(state) == sorted(NOT_0D)
    for key, arr in NOT_0D.items():
        assert _same_bits(state[key], arr), key
    assert pack(state) == blob


def test_restored_arrays_do_not_share_memory_with_the_bytes_or_each_other() -> None:
    blob = bytearray(pack({"a": np.arange(4.0), "b": np.ones(2)}))
    state = unpack(bytes(blob))
    state["a"][0] = 99.0
    assert unpack(bytes(blob))["a"][0] == 0.0
    assert state["b"].tolist() == [1.0, 1.0]


def _equal_with_nan(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN and types must match (bool is not int)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal_with_nan(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal_with_nan(a[k], b[k]) for k in a)
    return bool(a == b)


PLAIN: dict[str, Any] = {
    "int": 3,
    "big int": 2**62 + 1,
    "negative": -17,
    "float": 0.1,
    "tiny": 5e-324,
    "nan": float("nan"),
    "inf": float("inf"),
    "minus inf": float("-inf"),
    "none": None,
    "true": True,
    "false": False,
    "text": "P-101 bearing temp °C",
    "empty text": "",
    "list": [1, 2.5, None, "x", True, [], {}],
    "nested": {"a": {"b": [1, {"c": [float("nan"), -0.5]}]}, "z": []},
}


def test_plain_values_round_trip_exactly() -> None:
    state = unpack(pack(PLAIN))
    assert state.keys() == PLAIN.keys()
    for key, value in PLAIN.items():
        assert _equal_with_nan(state[key], value), key
    assert math.copysign(1.0, unpack(pack({"z": -0.0}))["z"]) == -1.0


def test_numpy_scalars_are_stored_as_plain_values() -> None:
    state = unpack(pack({"f": np.float64(1.25), "i": np.int64(7), "b": np.bool_(True)}))
    assert state == {"f": 1.25, "i": 7, "b": True}
    assert type(state["f"]) is float and type(state["i"]) is int and type(state["b"]) is bool


def test_mixed_state_round_trips() -> None:
    state = {**PLAIN, **{f"arr.{k}": v for k, v in NOT_0D.items()}}
    blob = pack(state)
    back = unpack(blob)
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            assert _same_bits(back[key], value), key
        else:
            assert _equal_with_nan(back[key], value), key
    assert pack(back) == blob


def test_same_state_gives_the_same_bytes() -> None:
    a = {"b": np.arange(5.0), "a": 1, "c": {"y": 1, "x": [2.0, float("nan")]}}
    b = {"c": {"x": [2.0, float("nan")], "y": 1}, "a": 1, "b": np.arange(5.0)}
    assert pack(a) == pack(a)
    assert pack(a) == pack(b), "key order must not matter"
    # A different value must give different bytes (so the test above can fail).
    assert pack(a) != pack({**a, "b": np.arange(5.0) + 1e-12})
    assert pack(a) != pack({**a, "b": np.arange(5, dtype=np.int64)})


def test_empty_state_round_trips() -> None:
    assert unpack(pack({})) == {}


def test_object_arrays_are_rejected() -> None:
    with pytest.raises(SnapshotError, match=r"obj: object arrays"):
        pack({"obj": np.array([1, "a", None], dtype=object)})
    with pytest.raises(SnapshotError, match="object"):
        pack({"rec": np.zeros(2, dtype=[("a", "f8"), ("b", "O")])})


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), b"raw bytes", [np.arange(2)], {"deep": np.zeros(1)}],
    ids=["set", "object", "bytes", "array in list", "array in dict"],
)
def test_values_json_cannot_hold_are_rejected(value: Any) -> None:
    with pytest.raises(SnapshotError, match="cannot be snapshotted"):
        pack({"bad": value})


# -- reading bytes that are not (whole) snapshots ------------------------------------------


def _blob() -> bytes:
    return pack({"a": np.arange(6.0).reshape(2, 3), "n": 3, "z": np.array([1, 2], dtype=np.uint8)})


def test_every_truncation_raises_snapshot_error() -> None:
    blob = _blob()
    for cut in range(len(blob)):
        with pytest.raises(SnapshotError):
            unpack(blob[:cut])


@pytest.mark.parametrize(
    ("cut_from_end", "message"),
    [(1, "truncated in array 'z'"), (2, "truncated in array 'z'"), (3, "truncated in array 'a'")],
)
def test_truncated_body_names_the_array(cut_from_end: int, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        unpack(_blob()[:-cut_from_end])


def test_truncated_prefix_says_truncated() -> None:
    with pytest.raises(SnapshotError, match="truncated"):
        unpack(MAGIC + b"\x01")


def _foreign() -> dict[str, bytes]:
    npy = io.BytesIO()
    np.save(npy, np.arange(3.0))
    return {
        "empty": b"",
        "text": b"hello world",
        "json": json.dumps({"arrays": [], "plain": {}}).encode(),
        "pickle": pickle.dumps({"a": 1}),
        "npy": npy.getvalue(),
        "magic only lower-case": MAGIC.lower() + b"\x00" * 8,
    }


@pytest.mark.parametrize("kind", list(_foreign()))
def test_foreign_bytes_raise_bad_magic(kind: str) -> None:
    with pytest.raises(SnapshotError, match="not a twinfleet snapshot"):
        unpack(_foreign()[kind])


def _with_header(header: bytes, body: bytes = b"") -> bytes:
    return MAGIC + struct.pack("<I", len(header)) + header + body


@pytest.mark.parametrize(
    "header",
    [b"{not json", b"\xff\xfe\x00garbage", b""],
    ids=["bad json", "bad utf-8", "empty header"],
)
def test_corrupt_header_raises_snapshot_error(header: bytes) -> None:
    with pytest.raises(SnapshotError, match="corrupt"):
        unpack(_with_header(header))


def test_header_length_beyond_the_end_raises_snapshot_error() -> None:
    blob = bytearray(_blob())
    blob[len(MAGIC) : len(MAGIC) + 4] = struct.pack("<I", 10**6)
    with pytest.raises(SnapshotError):
        unpack(bytes(blob))


@pytest.mark.parametrize(
    "header",
    [
        b"[]",
        b"{}",
        b'{"plain": {}}',
        b'{"arrays": [{"key": "a"}], "plain": {}}',
        b'{"arrays": [{"key": "a", "dtype": "not a dtype", "shape": [1], "offset": 0}],'
        b' "plain": {}}',
        b'{"arrays": [{"key": "a", "dtype": "|O", "shape": [1], "offset": 0}], "plain": {}}',
        b'{"arrays": [{"key": "a", "dtype": "<f8", "shape": [3], "offset": 0}], "plain": {}}',
    ],
    ids=[
        "list",
        "empty object",
        "no arrays",
        "array without dtype",
        "unknown dtype",
        "object dtype",
        "shape does not fit the data",
    ],
)
def test_well_formed_json_that_is_not_a_snapshot_header_raises_snapshot_error(
    header: bytes,
) -> None:
    """A valid JSON header of the wrong shape is as corrupt as invalid JSON: callers (twin
    restore) catch SnapshotError, not KeyError/TypeError."""
    with pytest.raises(SnapshotError):
        unpack(_with_header(header, body=b"\x00" * 16))


def test_trailing_bytes_are_rejected() -> None:
    """Two snapshots glued together, or a snapshot followed by junk, is not a snapshot."""
    blob = _blob()
    with pytest.raises(SnapshotError):
        unpack(blob + b"\x00junk")
    with pytest.raises(SnapshotError):
        unpack(blob + blob)


def test_prefixed_and_section_are_inverse() -> None:
    inner = {"a": 1, "b.c": np.arange(2)}
    flat = {**prefixed("det", inner), **prefixed("detx", {"a": 2}), "det": 5}
    assert sorted(flat) == ["det", "det.a", "det.b.c", "detx.a"]
    back = section("det", flat)
    assert back.keys() == inner.keys()
    assert back["a"] == 1 and _same_bits(back["b.c"], np.arange(2))
    assert section("detx", flat) == {"a": 2}

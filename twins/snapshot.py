"""Exact, safe snapshots: a flat dict of numpy arrays and plain values <-> bytes.

The format is a JSON header (format version, plain values, and dtype/shape/offset of each
array) followed by the raw array bytes. It never unpickles anything, is deterministic
(same state, same bytes) and restores arrays bit for bit.

>>> import numpy as np
>>> blob = pack({"version": 3, "wear": np.array([0.1, 0.25]), "name": "P-101"})
>>> state = unpack(blob)
>>> state["version"], state["wear"].tolist(), state["name"]
(3, [0.1, 0.25], 'P-101')
>>> pack(state) == blob
True
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

MAGIC = b"TFSNAP1\n"
_HEADER_LEN = struct.Struct("<I")

StateDict = dict[str, Any]


class SnapshotError(ValueError):
    """The bytes are not a twinfleet snapshot, or not one this code can read."""


def pack(state: Mapping[str, Any]) -> bytes:
    """Serialise a flat mapping of names to numpy arrays, numbers, strings, None,
    or JSON-able lists/dicts of those."""
    arrays: list[dict[str, Any]] = []
    plain: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for key in sorted(state):
        value = state[key]
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value).reshape(value.shape)  # keeps 0-d arrays 0-d
            if arr.dtype.hasobject:
                raise SnapshotError(f"{key}: object arrays cannot be snapshotted")
            raw = arr.tobytes()
            arrays.append(
                {"key": key, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset}
            )
            chunks.append(raw)
            offset += len(raw)
        elif isinstance(value, np.generic):
            plain[key] = value.item()
        else:
            plain[key] = value
    try:
        header = json.dumps(
            {"arrays": arrays, "plain": plain}, sort_keys=True, allow_nan=True
        ).encode()
    except TypeError as exc:
        raise SnapshotError(f"state holds a value that cannot be snapshotted: {exc}") from None
    return MAGIC + _HEADER_LEN.pack(len(header)) + header + b"".join(chunks)


def unpack(blob: bytes) -> StateDict:
    """Inverse of :func:`pack`; arrays come back writable and owned."""
    if not blob.startswith(MAGIC):
        raise SnapshotError("not a twinfleet snapshot (bad magic bytes)")
    start = len(MAGIC) + _HEADER_LEN.size
    if len(blob) < start:
        raise SnapshotError("snapshot is truncated")
    (hlen,) = _HEADER_LEN.unpack_from(blob, len(MAGIC))
    try:
        header = json.loads(blob[start : start + hlen])
    except ValueError as exc:
        raise SnapshotError(f"snapshot header is corrupt: {exc}") from None
    body = memoryview(blob)[start + hlen :]
    try:
        out: StateDict = dict(header["plain"])
        end = 0
        for spec in header["arrays"]:
            key, offset, shape = str(spec["key"]), int(spec["offset"]), tuple(spec["shape"])
            dtype = np.dtype(spec["dtype"])
            if dtype.hasobject:
                raise SnapshotError(f"array {key!r} has an object dtype")
            count = int(np.prod(shape, dtype=np.int64))
            end = offset + count * dtype.itemsize
            if end > len(body):
                raise SnapshotError(f"snapshot is truncated in array {key!r}")
            out[key] = np.frombuffer(body[offset:end], dtype=dtype).reshape(shape).copy()
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"snapshot header is not a twinfleet header: {exc!r}") from None
    if end != len(body):
        raise SnapshotError(f"snapshot has {len(body) - end} unexpected trailing bytes")
    return out


def prefixed(prefix: str, state: Mapping[str, Any]) -> StateDict:
    """Nest a component's state under ``prefix.``."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def section(prefix: str, state: Mapping[str, Any]) -> StateDict:
    """The part of a flat state stored under ``prefix.`` (prefix removed)."""
    p = prefix + "."
    return {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}

"""The encoding of a compacted block: one sensor's raw readings over one hour.

Lossless. Timestamps are kept as zig-zagged delta-of-deltas (a regular series becomes
zeros), values as float32 split into byte planes (the sign, exponent and high mantissa
bytes of a sensor's values barely change, so their planes compress to almost nothing;
the noisy low bytes stay), qualities as bytes; the three go through zlib together.
PostgreSQL's own TOAST compressors (pglz, lz4) have no entropy coding and gain little on
floats, so the column is stored ``EXTERNAL`` (uncompressed) and this does the work.

>>> ts = np.arange(0, 3_600_000, 1_000, dtype=np.int64) + 1_700_000_000_000
>>> v = (50 + np.sin(np.arange(3600) / 100)).astype(np.float32)
>>> q = np.zeros(3600, np.int8)
>>> data = encode(ts, v, q)
>>> back = decode(data)
>>> bool((back[0] == ts).all() and (back[1] == v).all() and (back[2] == q).all())
True
>>> len(data) / 3600 < 3
True
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

MAGIC = b"TFB1"
_HEAD = struct.Struct("<4sIq")  # magic, count, first timestamp (Unix ms)


def _shuffle(a: np.ndarray) -> bytes:
    """Byte planes: all first bytes, then all second bytes, ..."""
    return a.view(np.uint8).reshape(len(a), a.itemsize).T.tobytes()


def _unshuffle(raw: bytes, dtype: str, n: int) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(size, n)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(n)


def encode(ts_ms: np.ndarray, value: np.ndarray, quality: np.ndarray, level: int = 6) -> bytes:
    """One block from readings sorted by time (``ts_ms`` int64, ``value`` float32,
    ``quality`` int8)."""
    n = len(ts_ms)
    if n == 0:
        raise ValueError("a block holds at least one reading")
    ts = np.asarray(ts_ms, dtype=np.int64)
    dod = np.diff(ts, n=1, prepend=ts[0])
    dod = np.diff(dod, prepend=0)
    zigzag = ((dod << 1) ^ (dod >> 63)).astype("<u8")
    body = (
        _shuffle(zigzag)
        + _shuffle(np.asarray(value, dtype="<f4"))
        + np.asarray(quality, dtype=np.int8).tobytes()
    )
    return _HEAD.pack(MAGIC, n, int(ts[0])) + zlib.compress(body, level)


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ts_ms int64, value float32, quality int8)`` of a block."""
    magic, n, first = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a twinfleet block (magic {magic!r})")
    body = zlib.decompress(data[_HEAD.size :])
    if len(body) != n * 13:
        raise ValueError(f"block body has {len(body)} bytes, expected {n * 13} for {n} readings")
    z = _unshuffle(body[: 8 * n], "<u8", n)
    dod = (z >> np.uint64(1)).astype(np.int64) ^ -(z & np.uint64(1)).astype(np.int64)
    ts = np.cumsum(np.cumsum(dod)) + first
    value = _unshuffle(body[8 * n : 12 * n], "<f4", n)
    quality = np.frombuffer(body[12 * n :], dtype=np.int8).copy()
    return ts.astype(np.int64), value.astype(np.float32), quality

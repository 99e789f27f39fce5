"""PostgreSQL binary COPY buffers built with numpy, a whole column at a time.

The binary COPY format is a header, then per row a 16-bit field count and per field a
32-bit length (-1 for NULL) and the value in network byte order, then a trailer. With
fixed-width columns every row has the same layout, so a numpy structured array with
big-endian fields *is* the row stream: one ``tobytes()`` instead of Python work per row.

Timestamps travel as PostgreSQL's ``timestamptz``: microseconds since 2000-01-01 UTC.

>>> buf = copy_buffer([("ts", ">i8", ms_to_pg([946_684_800_000])), ("v", ">f4", [1.5])])
>>> buf[:11] == SIGNATURE, len(buf) == 19 + 2 + (4 + 8) + (4 + 4) + 2
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_MS = 946_684_800_000
"""2000-01-01T00:00:00Z in Unix milliseconds."""


def ms_to_pg(ms: Any) -> np.ndarray:
    """Unix milliseconds -> PostgreSQL timestamp microseconds."""
    return (np.asarray(ms, dtype=np.int64) - PG_EPOCH_MS) * 1000


def copy_buffer(columns: Sequence[tuple[str, str, Any]]) -> bytes:
    """A binary COPY stream of fixed-width, non-NULL columns: ``(name, dtype, values)``
    with big-endian numpy dtypes (``>i2 >i4 >i8 >f4 >f8``); all columns one length."""
    n = len(columns[0][2])
    fields: list[tuple[str, str]] = [("_n", ">i2")]
    for name, dtype, _ in columns:
        fields += [(f"_len_{name}", ">i4"), (name, dtype)]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["_n"] = len(columns)
    for name, dtype, values in columns:
        rows[f"_len_{name}"] = np.dtype(dtype).itemsize
        rows[name] = values
    return HEADER + rows.tobytes() + TRAILER

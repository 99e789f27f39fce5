"""Request limits: a per-token rate limit and a request body size limit.

The rate limit is a token bucket per bearer token, held in each replica (with several
replicas a client may get up to that many times the rate; the limit protects a replica).

>>> clock = [0.0]
>>> limiter = RateLimiter(rate_per_s=2, burst=2, clock=lambda: clock[0])
>>> [limiter.allow("t") for _ in range(3)]
[True, True, False]
>>> limiter.retry_after("t")
0.5
>>> clock[0] = 0.5
>>> limiter.allow("t"), limiter.refused
(True, 1)
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from api.errors import ApiError

MAX_TRACKED = 100_000
"""Tokens tracked at once; the least recently seen is forgotten first."""


class RateLimiter:
    def __init__(
        self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not rate_per_s > 0 or not burst >= 1:
            raise ValueError(f"need rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (level, t)
        self.refused = 0

    def _level(self, key: str) -> float:
        now = self._clock()
        level, then = self._buckets.get(key, (self.burst, now))
        return min(self.burst, level + (now - then) * self.rate)

    def allow(self, key: str) -> bool:
        level = self._level(key)
        ok = level >= 1.0
        self._buckets[key] = (level - 1.0 if ok else level, self._clock())
        self._buckets.move_to_end(key)
        if len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)
        if not ok:
            self.refused += 1
        return ok

    def retry_after(self, key: str) -> float:
        """Seconds until the next request from ``key`` would be allowed."""
        return round(max(0.0, 1.0 - self._level(key)) / self.rate, 3)

    def check(self, key: str) -> None:
        if not self.allow(key):
            raise ApiError(
                429,
                "rate_limited",
                f"more than {self.rate:g} requests/s (burst {self.burst:g}) with this token; "
                f"retry after {self.retry_after(key)} s",
            )


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 (by its
    ``Content-Length`` before reading it, or while reading a chunked body)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)
        self.refused = 0

    def _answer(self) -> tuple[dict[str, Any], dict[str, Any]]:
        body = json.dumps(
            ApiError(
                413,
                "payload_too_large",
                f"the request body is larger than the limit of {self.max_bytes} bytes",
            ).body()
        ).encode()
        start = {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
        return start, {"type": "http.response.body", "body": body}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    self.refused += 1
                    for message in self._answer():
                        await send(message)
                    return
        seen = 0
        started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            self.refused += 1
            if not started:
                for message in self._answer():
                    await send(message)

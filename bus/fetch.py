"""One fetch from a JetStream pull subscription, handled the same way in every consumer loop.

nats-py reports "no message within the timeout" by raising, and not always the same
exception: its own ``nats.errors.TimeoutError`` (or ``FetchTimeoutError``, a subclass)
from most paths, and asyncio's ``TimeoutError`` straight from others. Since Python 3.11
asyncio's is the builtin ``TimeoutError`` and nats-py's subclasses it, so ``except
TimeoutError`` catches both; a loop catching ``nats.errors.TimeoutError`` alone misses
asyncio's. Idle is the normal state of a consumer, so :func:`fetch` turns both into ``[]``.

Any other error is the bus being in trouble, not the loop: while the client reconnects
with its reconnect buffer off or full (``OutboundBufferLimitError``), an error status the
server answers a pull request with (``APIError``, e.g. the consumer was deleted), a socket
error. A loop that catches only the timeouts ends at the first of these (the host
actor's did). :func:`fetch` counts them (``counters["fetch_errors"]``), logs a warning
naming the consumer, waits ``backoff_s`` (so a loop whose every fetch fails does not
spin), and returns ``[]``: the loop goes on, and nats-py's own reconnection brings the
messages back.

Two things are never swallowed:

* cancellation, also when nats-py turned it into ``ConnectionClosedError`` (it does when
  the connection is closed while a fetch waits);
* a closed (or draining, hence closing) connection: nats-py never reopens one, so no
  retry can succeed; it is counted, logged and raised, for the caller's own recovery (a
  new connection, or the process restarted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Protocol

from nats.errors import ConnectionClosedError, ConnectionDrainingError

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger("twinfleet.bus")

FETCH_ERRORS = "fetch_errors"
"""The counter :func:`fetch` increments for each failed fetch (not for an idle one)."""

MAX_BACKOFF_S = 5.0
"""The longest :func:`fetch` waits after an error, whatever ``backoff_s`` asks."""


class PullSubscription(Protocol):
    """What :func:`fetch` needs of nats-py's ``JetStreamContext.PullSubscription``."""

    async def fetch(self, batch: int, timeout: float | None) -> list[Msg]: ...


def _cancelling() -> bool:
    """Whether the current task is being cancelled."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def fetch(
    sub: PullSubscription,
    batch: int,
    timeout: float,
    *,
    name: str,
    counters: MutableMapping[str, int] | None = None,
    backoff_s: float = 0.5,
) -> list[Msg]:
    """Up to ``batch`` messages of ``sub``, in stream order, waiting at most ``timeout``
    seconds for the first; ``[]`` when there is none (either timeout nats-py raises).

    Any other error is counted in ``counters["fetch_errors"]`` and logged with ``name``
    (the consumer), then, after ``backoff_s`` (at most :data:`MAX_BACKOFF_S`), ``[]`` is
    returned: the caller's loop goes on. Raises only ``asyncio.CancelledError`` (the task is
    cancelled) and ``ConnectionClosedError`` / ``ConnectionDrainingError`` (the connection
    is closed for good; counted first). See the module docstring for why.
    """
    try:
        return list(await sub.fetch(batch, timeout=timeout))
    except TimeoutError:  # nats-py's own TimeoutError subclasses it (and asyncio's is it)
        return []
    except Exception as exc:
        if _cancelling():  # nats-py raises ConnectionClosedError for a cancelled wait
            raise asyncio.CancelledError from exc
        if counters is not None:
            counters[FETCH_ERRORS] = counters.get(FETCH_ERRORS, 0) + 1
        if isinstance(exc, ConnectionClosedError | ConnectionDrainingError):
            log.warning("%s: fetch failed, the connection is closed (%s)", name, exc)
            raise
        pause = min(max(backoff_s, 0.0), MAX_BACKOFF_S)
        log.warning(
            "%s: fetch failed (%s: %s); retrying in %.1f s", name, type(exc).__name__, exc, pause
        )
        await asyncio.sleep(pause)
        return []

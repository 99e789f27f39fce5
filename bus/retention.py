"""How long the hub's JetStream keeps telemetry, how much disk it may take, and a warning
before the budget is reached.

Without limits the ``TELEMETRY`` stream grows until the disk is full. :class:`Retention`
bounds it two ways:

* **by age** (``telemetry_days``, 7 by default): JetStream removes messages older than
  that. The twins and the history writer consume within seconds, so a week is only the
  window for replaying after a long outage (a host's checkpoint older than that replays
  from the oldest message kept);
* **by size** (``telemetry_max_bytes``, off by default): a disk budget. At the budget the
  stream **refuses new messages** (JetStream's ``discard: new``) rather than dropping the
  oldest: nothing accepted is ever lost before its age runs out. A refused publish is an
  error its sender sees: the HTTP intake answers 503, a gateway's store-and-forward keeps
  the batches on its own disk and the hub's source retries.

:func:`budget_warnings` names every stream past ``warn_share`` (80 %) of its budget;
the history writer checks it at every status report (:mod:`store.writer`) and
``twinfleet up`` prints the usage at the end.

Disk per 1,000 sensors at 1 Hz: measured by ``bench/storage.py`` (``docs/history.md``).

>>> from bus.retention import StreamUsage, budget_warnings
>>> print(*budget_warnings([StreamUsage("TELEMETRY", 850, 10, 1000, 86_400.0)]))
JetStream stream TELEMETRY holds 850 B, 85% of its 1000 B budget: new messages are
refused at 100% (raise --telemetry-budget-mb or shorten --telemetry-days)
>>> budget_warnings([StreamUsage("TELEMETRY", 850, 10, None, 86_400.0)])
[]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("twinfleet.bus")

DAY_S = 86_400.0
WARN_SHARE = 0.8
"""A stream at this share of its byte budget is warned about."""


@dataclass(frozen=True)
class Retention:
    """The hub's telemetry retention: age in days and an optional byte budget."""

    telemetry_days: float = 7.0
    telemetry_max_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.telemetry_days > 0:
            raise ValueError(f"telemetry_days must be > 0, got {self.telemetry_days}")
        if self.telemetry_max_bytes is not None and self.telemetry_max_bytes < 1024 * 1024:
            raise ValueError(
                f"telemetry_max_bytes must be at least 1 MiB, got {self.telemetry_max_bytes}"
            )

    @property
    def max_age_s(self) -> float:
        return self.telemetry_days * DAY_S


DEFAULT = Retention()


@dataclass(frozen=True)
class StreamUsage:
    """What a stream holds against its limits (``max_bytes`` None: no budget)."""

    name: str
    bytes: int
    messages: int
    max_bytes: int | None
    max_age_s: float | None

    @property
    def share(self) -> float | None:
        return None if not self.max_bytes else self.bytes / self.max_bytes


def stream_config(retention: Retention) -> dict[str, Any]:
    """The limits of the ``TELEMETRY`` stream's configuration for ``retention``."""
    from nats.js.api import DiscardPolicy

    return {
        "max_age": retention.max_age_s,
        "max_bytes": retention.telemetry_max_bytes or -1,
        "discard": DiscardPolicy.NEW if retention.telemetry_max_bytes else DiscardPolicy.OLD,
    }


async def apply_retention(js: Any, retention: Retention, stream: str = "TELEMETRY") -> bool:
    """Set ``stream``'s age and size limits to ``retention`` (True: they changed). Only
    the hub's owner calls it (``twinfleet up``); the other processes create the stream with
    the default limits if it is missing (:func:`actors.bus.ensure_jetstream`) and never
    change them."""
    info = await js.stream_info(stream)
    config = info.config
    wanted = stream_config(retention)
    have = {
        "max_age": config.max_age or 0.0,
        "max_bytes": config.max_bytes if config.max_bytes is not None else -1,
        "discard": config.discard,
    }
    if (
        abs(have["max_age"] - wanted["max_age"]) < 1e-3
        and have["max_bytes"] == wanted["max_bytes"]
        and have["discard"] == wanted["discard"]
    ):
        return False
    for key, value in wanted.items():
        setattr(config, key, value)
    if config.duplicate_window and config.duplicate_window > retention.max_age_s:
        config.duplicate_window = retention.max_age_s  # JetStream requires window <= age
    await js.update_stream(config)
    log.info("stream %s: %s", stream, describe(retention))
    return True


def describe(retention: Retention) -> str:
    budget = retention.telemetry_max_bytes
    size = (
        f"at most {_bytes(budget)} (then new messages are refused)" if budget else "no size budget"
    )
    return f"telemetry kept {retention.telemetry_days:g} days, {size}"


async def stream_usage(js: Any, names: Sequence[str]) -> list[StreamUsage]:
    """Bytes and messages of each stream against its limits (missing streams left out)."""
    from nats.js.errors import NotFoundError

    out = []
    for name in names:
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            continue
        max_bytes = info.config.max_bytes
        out.append(
            StreamUsage(
                name,
                int(info.state.bytes),
                int(info.state.messages),
                max_bytes if max_bytes and max_bytes > 0 else None,
                info.config.max_age or None,
            )
        )
    return out


def budget_warnings(usages: Sequence[StreamUsage], warn_share: float = WARN_SHARE) -> list[str]:
    """One line per stream at or past ``warn_share`` of its byte budget."""
    out = []
    for u in usages:
        share = u.share
        if share is None or share < warn_share or u.max_bytes is None:
            continue
        out.append(
            f"JetStream stream {u.name} holds {_bytes(u.bytes)}, {share:.0%} of its "
            f"{_bytes(u.max_bytes)} budget: new messages are refused at 100% (raise "
            "--telemetry-budget-mb or shorten --telemetry-days)"
        )
    return out


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"

"""Did the warnings come first? Failure warnings judged against the failures that came.

A machine is *warned* when its twin's P(failure within 7 days) reaches ``threshold``
(0.3) or a predictive work order is created for it. A warning is one *episode*: it starts
with the first such event and lasts while they keep coming; it ends when the machine is
repaired or fails, or when no warning event came for ``quiet_h`` hours (the prediction
fell back below the threshold). A work order given with its id (:meth:`work_order`) is a
standing warning: the episode does not go quiet while the order is open, only once it
is closed (:meth:`order_closed`): the plant was told to act on the machine until then.

For every failure the log gives the first warning of the episode that was open (or had
ended within ``horizon_h`` hours) before it, and the lead time; a failure without one was
**not warned**. A warning episode is **false** when its machine did not fail within
``horizon_h`` hours of its start (and was not repaired in between: a repair acts on the
warning) — it is known once that horizon has passed, or the run ended (then it is
counted as *open*, not false). Failures in the first ``settle_h`` hours of a run are
reported apart: the twins had no history yet.

>>> H = 3_600_000
>>> log = LeadTimes(start_ms=0, settle_h=0)
>>> log.prediction("P-1", 100 * H, 0.35, "seal_leak")
>>> log.prediction("P-1", 101 * H, 0.6, "seal_leak")
>>> _ = log.failure("P-1", "seal_leak", 140 * H)
>>> log.prediction("M-2", 10 * H, 0.4, "bearing_wear")
>>> report = log.report(end_ms=400 * H)
>>> [(f.machine_id, f.lead_hours) for f in report.failures]
[('P-1', 40.0)]
>>> [(w.machine_id, w.started_ms // H) for w in report.false_warnings]
[('M-2', 10)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HOUR_MS = 3_600_000


@dataclass
class Episode:
    machine_id: str
    started_ms: int
    reason: str
    last_ms: int
    ended_ms: int | None = None
    outcome: str = "open"  # open, failed, repaired, false
    open_orders: set[str] = field(default_factory=set)
    """Predictive work orders of the machine still open: the episode stays open."""


@dataclass(frozen=True)
class FailureVerdict:
    machine_id: str
    failure_mode: str
    failed_ms: int
    warned_ms: int | None
    reason: str
    early: bool  # in the run's first settle_h hours

    @property
    def lead_hours(self) -> float | None:
        if self.warned_ms is None:
            return None
        return (self.failed_ms - self.warned_ms) / HOUR_MS

    @property
    def verdict(self) -> str:
        lead = self.lead_hours
        return (
            "NOT warned before" if lead is None else f"warned {lead:.0f} h before ({self.reason})"
        )


@dataclass(frozen=True)
class LeadTimeReport:
    failures: list[FailureVerdict]
    false_warnings: list[Episode]
    open_warnings: list[Episode]
    days: float = 0.0

    def judged(self) -> list[FailureVerdict]:
        """The failures after the settling hours (the ones the targets speak of)."""
        return [f for f in self.failures if not f.early]

    def lines(self, min_lead_h: float = 24.0) -> list[str]:
        """The verdict per failure and the false warnings, for people."""
        out = []
        judged = self.judged()
        ok = [f for f in judged if f.lead_hours is not None and f.lead_hours >= min_lead_h]
        out.append(
            f"failure warnings: {len(ok)} of {len(judged)} failures warned at least "
            f"{min_lead_h:g} h ahead"
            + (
                f" ({len(self.failures) - len(judged)} more in the run's first hours)"
                if len(judged) < len(self.failures)
                else ""
            )
        )
        for f in self.failures:
            early = " [first hours of the run]" if f.early else ""
            out.append(
                f"  {f.machine_id:8} {f.failure_mode:20} failed {_iso(f.failed_ms)}: "
                f"{f.verdict}{early}"
            )
        per_machine: dict[str, int] = {}
        for w in self.false_warnings:
            per_machine[w.machine_id] = per_machine.get(w.machine_id, 0) + 1
        out.append(
            f"warnings for machines that did not fail within the horizon: "
            f"{len(self.false_warnings)}"
            + (
                " ("
                + ", ".join(f"{m} x{n}" if n > 1 else m for m, n in sorted(per_machine.items()))
                + ")"
                if per_machine
                else ""
            )
            + f"; still open at the end: {len(self.open_warnings)}"
        )
        return out


def _iso(ms: int) -> str:
    from schemas.common import iso_utc

    return iso_utc(ms)[:16]


@dataclass
class LeadTimes:
    """Collects warnings, failures and repairs of a run (see the module docstring)."""

    start_ms: int
    threshold: float = 0.3
    horizon_h: float = 168.0
    quiet_h: float = 24.0
    settle_h: float = 48.0
    _open: dict[str, Episode] = field(default_factory=dict)
    _episodes: list[Episode] = field(default_factory=list)
    _failures: list[FailureVerdict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not self.horizon_h > 0:
            raise ValueError(f"horizon_h must be positive, got {self.horizon_h}")
        if not self.quiet_h > 0:
            raise ValueError(f"quiet_h must be positive, got {self.quiet_h}")
        if not self.settle_h >= 0:
            raise ValueError(f"settle_h must be >= 0, got {self.settle_h}")

    def _warn(self, machine_id: str, at_ms: int, reason: str) -> None:
        episode = self._current(machine_id, at_ms)
        if episode is None:
            episode = Episode(machine_id, at_ms, reason, at_ms)
            self._open[machine_id] = episode
            self._episodes.append(episode)
        episode.last_ms = max(episode.last_ms, at_ms)

    def _current(self, machine_id: str, at_ms: int) -> Episode | None:
        """The machine's open episode, closed first if it went quiet before ``at_ms``."""
        episode = self._open.get(machine_id)
        quiet = episode is not None and at_ms - episode.last_ms > self.quiet_h * HOUR_MS
        if episode is not None and quiet and not episode.open_orders:
            self._close(episode, episode.last_ms, "quiet")
            return None
        return episode

    def _close(self, episode: Episode, at_ms: int, outcome: str) -> None:
        episode.ended_ms = at_ms
        episode.outcome = outcome
        self._open.pop(episode.machine_id, None)

    def prediction(self, machine_id: str, at_ms: int, p_fail_7d: float, mode: str | None) -> None:
        """A RUL prediction of the machine at ``at_ms``."""
        if p_fail_7d >= self.threshold:
            self._warn(machine_id, at_ms, f"P(fail 7 d) {p_fail_7d:.2f}, {mode or 'any mode'}")

    def work_order(
        self, machine_id: str, at_ms: int, title: str, order_id: str | None = None
    ) -> None:
        """A predictive work order created for the machine at ``at_ms``; with its
        ``order_id``, the warning stands until :meth:`order_closed`."""
        self._warn(machine_id, at_ms, f"work order: {title}")
        if order_id is not None:
            self._open[machine_id].open_orders.add(order_id)

    def order_closed(self, machine_id: str, order_id: str, at_ms: int) -> None:
        """A predictive work order was completed or cancelled at ``at_ms``: the warning
        goes quiet ``quiet_h`` hours later unless something else keeps it up."""
        episode = self._open.get(machine_id)
        if episode is not None and order_id in episode.open_orders:
            episode.open_orders.discard(order_id)
            episode.last_ms = max(episode.last_ms, at_ms)

    def failure(self, machine_id: str, mode: str, at_ms: int) -> FailureVerdict:
        """The machine failed at ``at_ms``: the warnings open, or quiet for less than the
        horizon, were right."""
        self._current(machine_id, at_ms)  # closes a stale episode first
        horizon = self.horizon_h * HOUR_MS
        warned = [
            e
            for e in self._episodes
            if e.machine_id == machine_id
            and e.outcome in ("open", "quiet")
            and e.started_ms <= at_ms
            and (e.outcome == "open" or at_ms - e.started_ms <= horizon)
        ]
        first = min(warned, key=lambda e: e.started_ms) if warned else None
        for e in warned:
            self._close(e, e.ended_ms or at_ms, "failed")
        verdict = FailureVerdict(
            machine_id,
            mode,
            at_ms,
            None if first is None else first.started_ms,
            "" if first is None else first.reason,
            early=at_ms - self.start_ms < self.settle_h * HOUR_MS,
        )
        self._failures.append(verdict)
        return verdict

    def repair(self, machine_id: str, at_ms: int) -> None:
        """The machine was repaired (a warning acted on is not a false one)."""
        episode = self._current(machine_id, at_ms)
        if episode is not None:
            self._close(episode, at_ms, "repaired")

    @property
    def episodes(self) -> list[Episode]:
        """Every warning so far, oldest first."""
        return self._episodes

    def report(self, end_ms: int) -> LeadTimeReport:
        horizon = self.horizon_h * HOUR_MS
        false, still = [], []
        for e in self._episodes:
            if e.outcome in ("failed", "repaired"):
                continue
            if end_ms - e.started_ms >= horizon:
                false.append(e)
            else:
                still.append(e)
        return LeadTimeReport(
            failures=list(self._failures),
            false_warnings=false,
            open_warnings=still,
            days=(end_ms - self.start_ms) / (24 * HOUR_MS),
        )


@dataclass
class TimeOrderedLeadTimes:
    """:class:`LeadTimes` for events that arrive out of the order they happened in.

    In ``twinfleet up`` the simulated plant runs ahead of the pipeline: a failure is known
    the moment the simulator makes it, while the twins' predictions and the maintenance
    service's work orders about the hours before it are still on their way (a prediction
    made 11 days before a failure can arrive after it). Judging each failure on arrival
    would miss them. This one keeps every event with its plant time and judges them all,
    in time order, when asked for the report.

    >>> H = 3_600_000
    >>> log = TimeOrderedLeadTimes(start_ms=0, settle_h=0)
    >>> log.failure("P-1", "seal_leak", 140 * H)  # known first...
    >>> log.prediction("P-1", 100 * H, 0.35, "seal_leak")  # ...the warning arrives later
    >>> [(f.machine_id, f.lead_hours) for f in log.report(end_ms=400 * H).failures]
    [('P-1', 40.0)]
    """

    start_ms: int
    threshold: float = 0.3
    horizon_h: float = 168.0
    quiet_h: float = 24.0
    settle_h: float = 48.0
    _events: list[tuple[int, int, str, tuple[Any, ...]]] = field(default_factory=list)

    def _note(self, at_ms: int, what: str, *args: Any) -> None:
        self._events.append((at_ms, len(self._events), what, args))

    def prediction(self, machine_id: str, at_ms: int, p_fail_7d: float, mode: str | None) -> None:
        self._note(at_ms, "prediction", machine_id, at_ms, p_fail_7d, mode)

    def work_order(
        self, machine_id: str, at_ms: int, title: str, order_id: str | None = None
    ) -> None:
        self._note(at_ms, "work_order", machine_id, at_ms, title, order_id)

    def order_closed(self, machine_id: str, order_id: str, at_ms: int) -> None:
        self._note(at_ms, "order_closed", machine_id, order_id, at_ms)

    def failure(self, machine_id: str, mode: str, at_ms: int) -> None:
        self._note(at_ms, "failure", machine_id, mode, at_ms)

    def repair(self, machine_id: str, at_ms: int) -> None:
        self._note(at_ms, "repair", machine_id, at_ms)

    def replay(self) -> LeadTimes:
        """A :class:`LeadTimes` fed every event so far in time order (ties: as they came)."""
        log = LeadTimes(self.start_ms, self.threshold, self.horizon_h, self.quiet_h, self.settle_h)
        for _, _, what, args in sorted(self._events, key=lambda e: (e[0], e[1])):
            getattr(log, what)(*args)
        return log

    def report(self, end_ms: int) -> LeadTimeReport:
        return self.replay().report(end_ms)

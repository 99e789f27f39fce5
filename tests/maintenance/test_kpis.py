"""The alarm KPIs on a hand-made alert log, every figure worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from maintenance.kpis import alarm_kpis, peak, source
from schemas.alerts import Alert, AlertStatus, RuleKind
from schemas.anomaly import Severity

S = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # the period: 48 hours from S
E = S + timedelta(hours=48)
SITES = {"P-201": "north", "P-202": "north", "C-301": "south", "M-101": "south", "X-1": "east"}


def at(hours: float, minutes: float = 0) -> datetime:
    return S + timedelta(hours=hours, minutes=minutes)


def alert(
    n: int,
    machine: str,
    kind: str,
    subject: str,
    severity: str,
    raised: datetime,
    count: int = 1,
    resolved: datetime | None = None,
    status: str | None = None,
    rule: str | None = None,
) -> Alert:
    return Alert(
        alert_id=f"AL-{n:016x}",
        machine_id=machine,
        rule_id=rule or kind.replace("_", "-"),
        kind=RuleKind(kind),
        subject=subject,
        severity=Severity(severity),
        status=AlertStatus(status or ("resolved" if resolved else "open")),
        message="m",
        count=count,
        first_raised_at=raised,
        last_raised_at=raised,
        resolved_at=resolved,
    )


LOG = [
    alert(1, "P-201", "anomaly", "vibration", "low", at(1), 5, resolved=at(1, 3)),
    alert(2, "P-201", "anomaly", "vibration", "low", at(1, 4), 3, resolved=at(2)),
    alert(3, "P-201", "anomaly", "vibration", "medium", at(1, 9), 1, resolved=at(1, 30)),
    alert(4, "P-202", "anomaly", "flow", "high", at(1, 12), 2),  # open: standing
    alert(5, "P-202", "no_data", "", "medium", at(10), 4, resolved=at(10, 30)),
    alert(6, "C-301", "threshold", "discharge_temp", "high", at(30), 1),  # open, 18 h old
    alert(7, "C-301", "failure_probability", "bearing_wear", "critical", at(20), 2,
          status="acknowledged"),  # standing
    alert(8, "M-101", "rul_below", "winding", "medium", at(47, 55), 1),
    alert(9, "M-101", "anomaly", "machine", "low", at(47, 58), 1),
    alert(10, "P-201", "anomaly", "vibration", "low", at(-2), 7),  # before: standing
    alert(11, "P-201", "anomaly", "flow", "low", at(48, 1), 1),  # after the period
    alert(12, "C-301", "anomaly", "vibration", "low", at(5), 1, resolved=at(49),
          status="false_positive"),  # closed after the end: standing at the end
]  # fmt: skip


def test_the_kpis_of_a_hand_made_log() -> None:
    k = alarm_kpis(LOG, SITES, S, E)
    # raised in [S, E): 1-9 and 12
    assert (k.hours, k.raised) == (48.0, 10)
    assert k.per_hour == pytest.approx(10 / 48)
    # 01:00, 01:04, 01:09 in [01:00, 01:10); 01:04, 01:09, 01:12 in [01:04, 01:14)
    assert (k.peak_10min, k.peak_10min_at) == (3, at(1))
    assert [(s.severity.value, s.raised, s.share) for s in k.by_severity] == [
        ("critical", 1, 0.1),
        ("high", 2, 0.2),
        ("medium", 3, 0.3),
        ("low", 4, 0.4),
    ]
    # open at the end and raised before E - 24 h: 4 and 10 (north), 7 and 12 (south)
    assert k.standing_24h == 4
    sites = {s.site_id: s for s in k.sites}
    assert list(sites) == ["east", "north", "south"]
    north, south, east = sites["north"], sites["south"], sites["east"]
    assert (north.raised, north.peak_10min, north.peak_10min_at, north.standing_24h) == (
        5,
        3,
        at(1),
        2,
    )
    assert north.per_hour == pytest.approx(5 / 48)
    # south: 05:00, 20:00, 30:00, 47:55, 47:58 -> the last two in one window
    assert (south.raised, south.peak_10min, south.peak_10min_at, south.standing_24h) == (
        5,
        2,
        at(47, 55),
        2,
    )
    assert (east.raised, east.per_hour, east.peak_10min, east.peak_10min_at) == (0, 0, 0, None)
    # bad actors: by alerts raised, then repeats (count - 1 summed), then name
    assert [(b.source, b.raised, b.repeats) for b in k.bad_actors] == [
        ("P-201.vibration", 3, 6),
        ("P-202/no-data", 1, 3),
        ("C-301/bearing_wear", 1, 1),
        ("P-202.flow", 1, 1),
        ("C-301.discharge_temp", 1, 0),
        ("C-301.vibration", 1, 0),
        ("M-101/machine", 1, 0),
        ("M-101/winding", 1, 0),
    ]
    assert k.bad_actors[0].site_id == "north"
    top = alarm_kpis(LOG, SITES, S, E, top=2)
    assert [b.source for b in top.bad_actors] == ["P-201.vibration", "P-202/no-data"]
    text = "\n".join(k.lines())
    assert "10 alerts raised, 0.21 per hour" in text
    assert "peak: 3 in 10 minutes at 2026-11-30 01:00" in text
    assert "critical 1 (10%), high 2 (20%), medium 3 (30%), low 4 (40%)" in text
    assert "standing over 24 h at the end: 4" in text
    assert "P-201.vibration 3 (6 repeats)" in text


def test_another_period_and_edges() -> None:
    # the second day only: 6 (30:00), 8 (47:55), 9 (47:58); standing at E as before
    k = alarm_kpis(LOG, SITES, S + timedelta(hours=24), E)
    assert (k.raised, k.peak_10min, k.standing_24h) == (3, 2, 4)
    day1 = alarm_kpis(LOG, SITES, S, S + timedelta(hours=24))
    # the first day: 1-5, 7 and 12; standing at its end (S + 24 h): only 10, raised at
    # S - 2 h (4, raised at 01:12, is 22 h 48 min old then)
    assert (day1.raised, day1.standing_24h) == (7, 1)
    unknown = alarm_kpis([alert(20, "Z-9", "anomaly", "a", "low", at(1))], SITES, S, E)
    assert [s.site_id for s in unknown.sites if s.raised] == ["unknown"]
    empty = alarm_kpis([], SITES, S, E)
    assert (empty.raised, empty.peak_10min, empty.peak_10min_at) == (0, 0, None)
    assert all(s.share == 0 for s in empty.by_severity)
    with pytest.raises(ValueError, match=r"end .* must be after start"):
        alarm_kpis(LOG, SITES, E, S)
    # the window is half-open: 10 minutes apart are two windows
    assert peak([at(0), at(0, 10)]) == (1, at(0))
    assert peak([at(0), at(0, 9)]) == (2, at(0))
    assert source(LOG[4]) == "P-202/no-data" and source(LOG[8]) == "M-101/machine"

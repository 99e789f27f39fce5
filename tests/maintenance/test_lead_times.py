"""Warning lead times judged on hand-made runs."""

from __future__ import annotations

import pytest

from maintenance.lead_times import LeadTimes

H = 3_600_000


def test_a_failure_takes_the_first_warning_of_its_episode() -> None:
    log = LeadTimes(start_ms=0)
    log.prediction("P-1", 60 * H, 0.1, "seal_leak")  # below the threshold: no warning
    log.work_order("P-1", 70 * H, "median RUL 200 h is below 240 h")
    log.prediction("P-1", 80 * H, 0.5, "seal_leak")
    verdict = log.failure("P-1", "seal_leak", 130 * H)
    assert verdict.lead_hours == 60.0 and verdict.reason.startswith("work order")
    assert not verdict.early
    report = log.report(400 * H)
    assert report.false_warnings == [] and report.open_warnings == []


def test_unwarned_and_early_failures() -> None:
    log = LeadTimes(start_ms=0, settle_h=48)
    log.failure("M-1", "bearing_wear", 10 * H)  # in the run's first two days
    log.failure("M-2", "winding_insulation", 100 * H)
    report = log.report(200 * H)
    assert [(f.machine_id, f.lead_hours, f.early) for f in report.failures] == [
        ("M-1", None, True),
        ("M-2", None, False),
    ]
    assert [f.machine_id for f in report.judged()] == ["M-2"]
    assert "0 of 1 failures warned at least 24 h ahead" in report.lines()[0]


def test_false_open_and_repaired_warnings() -> None:
    log = LeadTimes(start_ms=0, horizon_h=168, quiet_h=24)
    log.prediction("C-1", 10 * H, 0.4, "bearing_wear")  # nothing follows: false
    log.prediction("C-1", 11 * H, 0.4, "bearing_wear")  # same episode
    log.prediction("C-1", 100 * H, 0.35, "bearing_wear")  # quiet > 24 h: a second one
    log.prediction("C-2", 20 * H, 0.9, "seal_leak")
    log.repair("C-2", 30 * H)  # acted on: not false
    log.prediction("C-3", 300 * H, 0.5, "seal_leak")  # horizon not over at the end
    report = log.report(320 * H)
    assert [(w.machine_id, w.started_ms // H) for w in report.false_warnings] == [
        ("C-1", 10),
        ("C-1", 100),
    ]
    assert [w.machine_id for w in report.open_warnings] == ["C-3"]
    assert "C-1 x2" in report.lines()[-1]


def test_a_warning_that_went_quiet_still_counts_if_the_failure_comes_within_the_horizon() -> None:
    log = LeadTimes(start_ms=0, settle_h=0)
    log.prediction("P-4", 10 * H, 0.31, "seal_leak")
    verdict = log.failure("P-4", "seal_leak", 60 * H)  # 50 h later, no warning in between
    assert verdict.lead_hours == 50.0
    assert log.report(400 * H).false_warnings == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        LeadTimes(start_ms=0, threshold=1.5)
    with pytest.raises(ValueError, match="horizon_h"):
        LeadTimes(start_ms=0, horizon_h=0)


def test_an_open_work_order_is_a_standing_warning_until_it_is_closed() -> None:
    H = 3_600_000
    log = LeadTimes(start_ms=0, settle_h=0, quiet_h=24)
    # created 200 h before the failure, never acted on: the machine was warned 200 h ahead
    log.work_order("C-303", 100 * H, "Repair bearing_wear on C-303", "WO-1")
    verdict = log.failure("C-303", "bearing_wear", 300 * H)
    assert verdict.lead_hours == 200.0
    # without its id the order is one event: quiet after a day, too early to count
    log = LeadTimes(start_ms=0, settle_h=0, quiet_h=24)
    log.work_order("C-303", 100 * H, "Repair bearing_wear on C-303")
    assert log.failure("C-303", "bearing_wear", 300 * H).lead_hours is None
    # closed (cancelled) at 150 h, quiet 24 h later: the failure at 300 h was not warned
    log = LeadTimes(start_ms=0, settle_h=0, quiet_h=24)
    log.work_order("C-303", 100 * H, "Repair bearing_wear on C-303", "WO-1")
    log.order_closed("C-303", "WO-1", 150 * H)
    assert log.failure("C-303", "bearing_wear", 300 * H).lead_hours is None
    # an order open for longer than the horizon on a machine that never fails is false
    log = LeadTimes(start_ms=0, settle_h=0, quiet_h=24)
    log.work_order("M-1", 10 * H, "Repair", "WO-2")
    report = log.report(end_ms=400 * H)
    assert [e.machine_id for e in report.false_warnings] == ["M-1"]


def test_events_that_arrive_late_are_judged_in_the_order_they_happened() -> None:
    from maintenance.lead_times import TimeOrderedLeadTimes

    H = 3_600_000
    log = TimeOrderedLeadTimes(start_ms=0, settle_h=0)
    # the simulator makes the failure and the repair first; the work order created 200 h
    # before the failure comes out of the pipeline afterwards
    log.failure("C-303", "bearing_wear", 300 * H)
    log.repair("C-303", 308 * H)
    log.work_order("C-303", 100 * H, "Repair bearing wear on C-303", "WO-2")
    (verdict,) = log.report(end_ms=400 * H).failures
    assert verdict.lead_hours == 200.0
    # judged on arrival, the same events miss it
    online = LeadTimes(start_ms=0, settle_h=0)
    online.failure("C-303", "bearing_wear", 300 * H)
    online.repair("C-303", 308 * H)
    online.work_order("C-303", 100 * H, "Repair bearing wear on C-303", "WO-2")
    assert online.report(end_ms=400 * H).failures[0].lead_hours is None

"""DetectorSet: one finding per onset, escalation, recovery and relapse, several detectors
on one sensor, multivariate findings folded into sensor findings, stale sensors found by
tick(), and open conditions surviving a snapshot."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.anomaly import AnomalyType, Severity
from twins.detectors.base import ALARM, Scan, ScanBlock
from twins.detectors.ensemble import DetectorSet, Finding, Verdict
from twins.detectors.multivariate import PCAMonitor
from twins.detectors.robust import RobustZScore
from twins.detectors.rules import FlatlineRule, RateOfChangeRule, StaleRule, ThresholdRule
from twins.snapshot import pack, unpack

T0 = 1.7e9


def scan(values: list[float], i: float) -> Scan:
    return Scan.from_values(values, T0 + 10.0 * i)


def run(ds: DetectorSet, rows: list[list[float]], start: int = 0) -> list[Verdict]:
    return [ds.process(scan(v, start + i)) for i, v in enumerate(rows)]


def findings(verdicts: list[Verdict]) -> list[tuple[int, Finding]]:
    """(scan index, finding) for every finding reported."""
    return [(i, f) for i, v in enumerate(verdicts) for f in v.findings]


def threshold_set() -> DetectorSet:
    return DetectorSet([ThresholdRule(2, normal_high=[80.0, 80.0], critical_high=[100.0, 100.0])])


# -- one finding per condition ----------------------------------------------------------------


def test_a_lasting_condition_gives_one_finding() -> None:
    ds = threshold_set()
    rows = [[50.0, 50.0]] * 3 + [[90.0, 50.0]] * 40 + [[50.0, 50.0]] * 3
    got = findings(run(ds, rows))
    assert [(i, f.sensor, f.detector, f.severity) for i, f in got] == [
        (4, 0, "threshold", Severity.MEDIUM)  # on-delay: from the second reading beyond
    ]
    f = got[0][1]
    assert f.anomaly_type == AnomalyType.THRESHOLD
    assert f.score == pytest.approx(0.725) and f.also == ()


def test_stuck_sensor_gives_one_finding() -> None:
    """The module's promise: 'one stuck sensor gives one finding, not one per reading'.

    FlatlineRule's score keeps rising with the repeats (0.5 at stuck_after, 1.0 at twice
    that), so the set reports the same stuck sensor again at every severity step."""
    ds = DetectorSet([FlatlineRule(1, stuck_after=[5])])
    rows = [[float(v)] for v in range(5)] + [[42.0]] * 60
    got = findings(run(ds, rows))
    assert len(got) >= 1 and all(f.detector == "flatline" for _, f in got)
    assert [(i, f.severity) for i, f in got][:1] == [(10, Severity.LOW)]  # 5 repeats
    assert len(got) == 1, [(i, f.severity.value) for i, f in got]


def test_escalation_gives_a_new_finding_and_de_escalation_does_not() -> None:
    ds = threshold_set()
    rows = [[50, 50], [85, 50], [85, 50], [95, 50], [95, 50], [85, 50], [120, 50], [120, 50]]
    rows += [[90, 50]]
    got = findings(run(ds, [[float(x) for x in r] for r in rows]))
    # Each severity from the second reading at it (the lesser of the last two readings').
    assert [(i, f.severity) for i, f in got] == [
        (2, Severity.LOW),
        (4, Severity.HIGH),
        (7, Severity.CRITICAL),
    ]
    assert ds.open_severity.tolist() == [4, 0, 0]  # keeps its highest severity


def test_recovery_closes_the_condition_and_a_relapse_is_a_new_finding() -> None:
    ds = threshold_set()
    rows = [[90.0, 50.0]] * 3 + [[79.0, 50.0]] + [[90.0, 50.0]] * 3
    verdicts = run(ds, rows)
    assert [len(v.findings) for v in verdicts] == [0, 1, 0, 0, 0, 1, 0]
    assert ds.open_severity.tolist() == [2, 0, 0]
    ds.process(scan([50.0, 50.0], 10))
    assert ds.open_severity.tolist() == [0, 0, 0]


def test_sensors_have_their_own_conditions() -> None:
    ds = threshold_set()
    rows = [[90.0, 50.0], [90.0, 90.0], [90.0, 90.0], [50.0, 90.0], [90.0, 90.0], [90.0, 90.0]]
    got = findings(run(ds, rows))
    assert [(i, f.sensor) for i, f in got] == [(1, 0), (2, 1), (5, 0)]


def test_a_single_reading_beyond_a_limit_raises_nothing() -> None:
    ds = threshold_set()
    rows = [[50.0, 50.0], [150.0, 50.0], [50.0, 50.0], [90.0, 50.0], [50.0, 50.0]]
    assert findings(run(ds, rows)) == []
    assert ds.open_severity.tolist() == [0, 0, 0]


def test_verdict_scores() -> None:
    ds = threshold_set()
    v = ds.process(scan([90.0, 85.0], 0))
    assert v.sensor_scores.tolist() == pytest.approx([0.725, 0.6125])
    assert v.machine_score == 0.0 and v.score == pytest.approx(0.725)


# -- several detectors ------------------------------------------------------------------------


def test_two_detectors_on_one_sensor_and_scan_give_one_finding_naming_the_other() -> None:
    ds = DetectorSet(
        [
            ThresholdRule(2, normal_high=[80.0, 80.0], critical_high=[100.0, 100.0]),
            RateOfChangeRule(2, max_rate_per_s=[1.0, 1.0]),
        ]
    )
    verdicts = run(ds, [[50.0, 50.0], [50.0, 50.0], [105.0, 50.0], [105.0, 50.0]])
    got = findings(verdicts)
    assert [(i, f.sensor) for i, f in got] == [(2, 0), (3, 0)]
    _, jump = got[0]
    # An implausibly fast jump beyond the critical limit is first a data glitch (low) ...
    assert jump.detector == "rate_of_change" and jump.anomaly_type == AnomalyType.SPIKE
    assert jump.also == ("threshold",)
    assert jump.score == 1.0 and jump.severity == Severity.LOW
    assert jump.expected == 50.0  # the rate rule expected the previous reading
    # ... and critical once the next reading confirms it.
    _, confirmed = got[1]
    assert confirmed.detector == "threshold" and confirmed.severity == Severity.CRITICAL


def test_a_single_reading_beyond_the_critical_limit_after_a_jump_stays_low() -> None:
    ds = DetectorSet(
        [
            ThresholdRule(1, normal_high=[80.0], critical_high=[100.0]),
            RateOfChangeRule(1, max_rate_per_s=[1.0]),
        ]
    )
    got = findings(run(ds, [[50.0], [50.0], [170.0], [50.0], [51.0]]))
    assert [f.severity for _, f in got] == [Severity.LOW]  # the glitch, nothing critical


def test_learned_anomalies_start_low_and_rise_with_persistence_and_corroboration() -> None:
    ds = DetectorSet([RobustZScore(2, threshold=4.0, warmup=10)], persist_s=60.0)
    rng = np.random.default_rng(5)
    for i in range(40):
        ds.process(scan(list(10.0 + rng.normal(0, 0.1, 2)), i))
    severities = []
    for i in range(40, 140):  # scans 10 s apart: sensor 0 far off from scan 40, 1 from 120
        v = [20.0, 20.0 if i >= 120 else 10.0 + rng.normal(0, 0.1)]
        severities += [(i, f.sensor, f.severity) for f in ds.process(scan(v, i)).findings]
    assert severities == [  # each counts from its second reading in alarm (on-delay)
        (41, 0, Severity.LOW),  # new and alone
        (47, 0, Severity.MEDIUM),  # a minute in alarm
        (121, 0, Severity.HIGH),  # persistent, and now corroborated by sensor 1
        (121, 1, Severity.MEDIUM),  # new, but corroborated
        (127, 1, Severity.HIGH),  # and a minute later persistent too
    ]


def test_a_detector_below_the_alarm_is_not_named() -> None:
    ds = DetectorSet(
        [
            ThresholdRule(1, normal_high=[80.0], critical_high=[100.0]),
            RateOfChangeRule(1, max_rate_per_s=[10.0]),
        ]
    )
    got = findings(run(ds, [[79.0], [85.0], [90.0]]))  # 0.5/s: rate score 0.025
    assert [(f.detector, f.also) for _, f in got] == [("threshold", ())]


def correlated(rng: np.random.Generator, rows: int) -> np.ndarray:
    load = rng.standard_normal(rows)
    noise = 0.1 * rng.standard_normal((rows, 4))
    return np.stack([load + noise[:, 0], load + noise[:, 1], load + noise[:, 2], noise[:, 3]], 1)


def pca_set(with_threshold_on_2: bool) -> DetectorSet:
    # 4.0: never reached by the fit data (a standard normal load), so no condition is open
    rule = ThresholdRule(4, normal_high=[None, None, 4.0 if with_threshold_on_2 else None, None])
    ds = DetectorSet([PCAMonitor(4, n_fit=300, variance=0.9, alpha=0.001), rule])
    fit = correlated(np.random.default_rng(5), 300)
    block = ScanBlock.from_matrix(fit, T0 + np.arange(300))
    for i in range(len(block)):
        ds.process(block.row(i))
    assert ds.detectors[0].fitted  # type: ignore[attr-defined]
    return ds


BREAK = [-1.0, -1.0, 4.5, 0.0]  # sensor 2 reads high while the load is low


def test_multivariate_finding_is_reported_at_machine_level_with_its_contributors() -> None:
    ds = pca_set(with_threshold_on_2=False)
    first = ds.process(scan(BREAK, 400))
    assert first.machine_score > ALARM and first.findings == []  # on-delay: one reading
    v = ds.process(scan(BREAK, 400.5))
    assert len(v.findings) == 1
    f = v.findings[0]
    assert f.sensor == -1 and f.detector == "pca_t2_q"
    assert f.anomaly_type == AnomalyType.MULTIVARIATE
    assert f.contributing[0] == 2 and len(f.contributing) <= 3
    assert np.isnan(f.expected)
    assert ds.process(scan(BREAK, 401)).findings == [], "the machine condition stays open"


def test_one_reading_at_the_control_limit_is_not_a_learned_condition() -> None:
    ds = pca_set(with_threshold_on_2=False)
    assert ds.process(scan(BREAK, 400)).findings == []
    normal = correlated(np.random.default_rng(6), 5)
    assert all(ds.process(scan(list(row), 401 + i)).findings == [] for i, row in enumerate(normal))


def test_multivariate_finding_is_folded_into_the_flagged_sensors_finding() -> None:
    ds = pca_set(with_threshold_on_2=True)
    assert ds.process(scan(BREAK, 400)).findings == []  # both wait for a second reading
    v = ds.process(scan(BREAK, 400.5))
    assert v.machine_score > ALARM
    assert [(f.sensor, f.detector) for f in v.findings] == [(2, "threshold")]
    assert "pca_t2_q" in v.findings[0].also


# -- tick and stale sensors -------------------------------------------------------------------


def test_tick_finds_stale_sensors() -> None:
    ds = DetectorSet([StaleRule(2, max_age_s=[30.0, 30.0]), RobustZScore(2, warmup=5)])
    for i in range(10):
        ds.process(scan([1.0 + 0.1 * (i % 3), 2.0 - 0.1 * (i % 2)], i))
    state = np.array([1.0, 2.0])
    last = T0 + 90.0
    assert ds.tick(last + 20.0, state).findings == []
    v = ds.tick(last + 30.0, state)
    assert [(f.sensor, f.detector, f.anomaly_type) for f in v.findings] == [
        (0, "stale", AnomalyType.STALE),
        (1, "stale", AnomalyType.STALE),
    ]
    assert ds.tick(last + 35.0, state).findings == []  # same severity: already reported
    assert ds.open_severity.tolist() == [1, 1, 0]
    v = ds.process(Scan.from_values([1.1, np.nan], last + 50.0, state=state))
    assert v.sensor_scores[0] < ALARM and v.sensor_scores[1] >= ALARM  # 0 reports again
    assert ds.open_severity[0] == 0


# -- construction and snapshots ---------------------------------------------------------------


def test_bad_detector_sets_are_rejected() -> None:
    with pytest.raises(ValueError, match="detectors"):
        DetectorSet([])
    with pytest.raises(ValueError, match="numbers of sensors"):
        DetectorSet([ThresholdRule(2), StaleRule(3)])
    with pytest.raises(ValueError, match="unique"):
        DetectorSet([ThresholdRule(2), ThresholdRule(2)])


def test_state_round_trip_restores_open_conditions() -> None:
    def build() -> DetectorSet:
        return DetectorSet(
            [
                ThresholdRule(2, normal_high=[80.0, 80.0], critical_high=[100.0, 100.0]),
                FlatlineRule(2, stuck_after=[30, 30]),
                RobustZScore(2, warmup=10),
            ]
        )

    rng = np.random.default_rng(9)
    ds = build()
    rows = [[50.0 + rng.normal(), 50.0 + rng.normal()] for _ in range(20)] + [[90.0, 50.0]] * 2
    run(ds, rows)
    # 90 is medium by its limits; the robust z-score (40 sigma) is new (low), corroborated
    # by the limit (medium).
    assert ds.open_severity.tolist() == [2, 0, 0]
    blob = pack(ds.state_dict())
    restored = build()
    restored.load_state_dict(unpack(blob))
    assert pack(restored.state_dict()) == blob
    assert restored.open_severity.tolist() == [2, 0, 0]
    again = [[90.0, 50.0 + rng.normal()] for _ in range(5)] + [[50.0, 50.0]] * 2
    again += [[92.0, 50.0]] * 2
    a, b = run(ds, again, start=30), run(restored, again, start=30)
    assert findings(b) == findings(a)
    assert [i for i, _ in findings(b)] == [8], "no new finding for the open condition"
    for va, vb in zip(a, b, strict=True):
        assert np.array_equal(va.sensor_scores, vb.sensor_scores)
    # Without the restored conditions the same scan would be reported again.
    fresh = build()
    fresh.process(scan([90.0, 50.0], 29))
    assert len(fresh.process(scan([90.0, 50.0], 30)).findings) == 1


def test_clone_is_independent() -> None:
    ds = threshold_set()
    run(ds, [[90.0, 50.0]] * 2)
    other = ds.clone()
    other.process(scan([50.0, 50.0], 2))
    assert ds.open_severity.tolist() == [2, 0, 0] and other.open_severity.tolist() == [0, 0, 0]

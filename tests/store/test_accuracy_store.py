"""Live accuracy from a real PostgreSQL history: predictions, repairs and the last data."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from store.accuracy import live_accuracy
from twins.accuracy import Accuracy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def seed(url: str) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO assets (asset_id, name, type, kind, site_id, line_id, spec) "
            "VALUES (%s, %s, %s, 'pump', 's', 'l', '{}')",
            [("P-1", "pump 1", "pump-75kw"), ("P-2", "pump 2", "pump-75kw")],
        )
        # P-1 failed at 1,000 h (repaired by 1,010 h); P-2 had a preventive repair at 600 h
        cur.executemany(
            "INSERT INTO work_orders (workorder_id, asset_id, type, priority, status, title, "
            "created_at, completed_at, failure_mode, record) "
            "VALUES (%s, %s, %s, 'high', 'completed', 't', %s, %s, %s, '{}')",
            [
                ("WO-1", "P-1", "corrective", h(1000), h(1010), "seal_leak"),
                ("WO-2", "P-2", "preventive", h(590), h(600), None),
                ("WO-3", "P-2", "corrective", h(700), None, "seal_leak"),  # still open
            ],
        )
        rows = [
            # P-1's first life: 200 h and 100 h before the failure
            ("P-1", h(800), 150.0, 100.0, 300.0, 0.2),
            ("P-1", h(900), 300.0, 150.0, 600.0, 0.1),
            # P-1's second life, censored at its last prediction (1,300 h)
            ("P-1", h(1100), 900.0, 400.0, 2000.0, 0.05),
            ("P-1", h(1300), 900.0, 400.0, 2000.0, 0.05),
            # P-2: censored at the preventive repair, 100 h later
            ("P-2", h(500), 400.0, 200.0, 800.0, 0.5),
        ]
        cur.executemany(
            "INSERT INTO rul_predictions (asset_id, predicted_at, component, median_hours, "
            "lower_hours, upper_hours, p_fail_7d, model_version, record) "
            "VALUES (%s, %s, 'machine', %s, %s, %s, %s, 'v1', %s)",
            [
                (*r, json.dumps({"failure_probability": {"24": r[5] / 4, "168": r[5]}}))
                for r in rows
            ],
        )


def read(url: str, since: datetime | None = None) -> list[Accuracy]:
    async def go() -> list[Accuracy]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await live_accuracy(conn, since)

    return asyncio.run(go())


def test_predictions_are_scored_against_the_lives_the_repairs_cut(database: str) -> None:
    seed(database)
    [a] = read(database)
    assert (a.model_version, a.machine_type, a.predictions, a.failures) == (
        "v1",
        "pump-75kw",
        4,  # the last prediction (at P-1's last data) has no time left to score
        1,
    )
    # failed life: remaining 200 h (inside 100-300) and 100 h (outside 150-600)
    assert a.interval_coverage == pytest.approx(0.5)
    assert a.median_abs_error_hours == pytest.approx((50 + 200) / 2)
    # at 168 h: 200 h → 0 (outlived), 100 h → 1, P-1 at 1,100 h (200 h left, censored) → 0,
    # P-2 at 500 h (100 h left, censored) → unknown
    assert a.known_outcomes[168] == 3
    assert a.brier[168] == pytest.approx((0.2**2 + 0.9**2 + 0.05**2) / 3)
    assert [w.p_fail_7d for w in a.week_ahead] == [0.2]


def test_since_leaves_out_older_predictions(database: str) -> None:
    seed(database)
    [a] = read(database, since=h(850))
    assert a.predictions == 2 and a.failures == 1
    assert [w.p_fail_7d for w in a.week_ahead] == [None]  # no prediction a week ahead


def test_an_empty_history_has_no_accuracy(database: str) -> None:
    assert read(database) == []


def test_twinfleet_models_prints_the_accuracy(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from twinfleet.cli import main

    assert main(["models", "--database-url", database]) == 0
    assert "no stored prediction has an outcome yet" in capsys.readouterr().out
    seed(database)
    assert main(["models", "--database-url", database]) == 0
    out = capsys.readouterr().out
    assert "v1 on pump-75kw: 4 predictions, 1 failures; interval coverage 50%" in out
    assert "P(fail 7 d) a week before each failure: 0.20" in out
    assert "P(fail 7 d) 0.0-0.1: 1 predictions, mean 0.05, observed 0.00" in out

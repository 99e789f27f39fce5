"""Twin records in the API's words: the JSON shapes of ``../shared/API.md`` (times as ISO
8601 UTC), used by the REST routes. The GraphQL types are built from the same helpers."""

from __future__ import annotations

from typing import Any

from api.view import AssetView
from schemas.anomaly import AnomalyRecord
from schemas.common import iso_utc
from schemas.plant import MachineSpec
from schemas.rul import RulPrediction

QUALITY = ("good", "uncertain", "bad")
RISK_HORIZON_H = 168
"""The horizon of ``predicted_failure``: the probability of failing within a week."""


def iso(ms: int | None) -> str | None:
    return None if ms is None else iso_utc(ms)


def sensor_rows(view: AssetView) -> list[dict[str, Any]]:
    state = view.state
    rows = []
    for sensor in view.spec.sensors:
        sid = f"{view.spec.id}.{sensor.name}"
        s = state.sensors.get(sid) if state is not None else None
        rows.append(
            {
                "sensor_id": sid,
                "name": sensor.name,
                "kind": sensor.kind.value,
                "unit": sensor.unit,
                "value": None if s is None else s.value,
                "timestamp": None if s is None else iso(s.timestamp),
                "quality": QUALITY[int(s.quality)] if s is not None else None,
                "stale": bool(s.stale) if s is not None else None,
            }
        )
    return rows


def predicted_failure(rul: RulPrediction | None) -> dict[str, Any] | None:
    if rul is None:
        return None
    return {
        "probability": rul.failure_probability.get(RISK_HORIZON_H),
        "horizon_hours": RISK_HORIZON_H,
        "time_to_failure_hours": rul.median_hours,
        "failure_mode": rul.failure_mode,
        "confidence": rul.confidence,
    }


def rul_prediction(rul: RulPrediction) -> dict[str, Any]:
    return {
        "median_hours": rul.median_hours,
        "confidence_interval": {
            "lower": rul.lower_hours,
            "upper": rul.upper_hours,
            "confidence": rul.confidence,
        },
        "survival_curve": [
            {"hours": p.hours, "survival_probability": p.survival_probability}
            for p in rul.survival_curve
        ],
        "failure_probabilities": [
            {"horizon_hours": h, "probability": p}
            for h, p in sorted(rul.failure_probability.items())
        ],
        "failure_mode": rul.failure_mode,
        "failure_mode_shares": [
            {"failure_mode": m, "share": p}
            for m, p in sorted(rul.failure_mode_shares.items(), key=lambda kv: -kv[1])
        ],
        "model_version": rul.model_version,
        "prediction_timestamp": iso(rul.predicted_at),
        "age_hours": rul.age_hours,
    }


def recommended_actions(spec: MachineSpec, rul: RulPrediction) -> list[dict[str, Any]]:
    """What to do, from the failure probability within a week and the machine type's
    maintenance catalogue (duration and parts cost of the predicted failure mode)."""
    p_week = rul.failure_probability.get(RISK_HORIZON_H, 0.0)
    if p_week >= 0.5:
        priority, when = "critical", "within 24 hours"
    elif p_week >= 0.3:
        priority, when = "high", "within 3 days"
    elif p_week >= 0.1:
        priority, when = "medium", "within 2 weeks"
    else:
        return [
            {
                "priority": "low",
                "action": "keep monitoring",
                "estimated_downtime_hours": 0.0,
                "estimated_cost": 0.0,
            }
        ]
    mode = rul.failure_mode
    task = next((t for t in spec.maintenance if t.failure_mode == mode), None)
    return [
        {
            "priority": priority,
            "action": f"repair {mode or 'the machine'} {when}"
            + (f" (parts: {', '.join(task.parts)})" if task and task.parts else ""),
            "estimated_downtime_hours": task.duration_hours if task else None,
            "estimated_cost": task.parts_cost if task else None,
        }
    ]


def rul_answer(view: AssetView) -> dict[str, Any]:
    """``GET /assets/{id}/rul``."""
    rul = view.rul
    if rul is None:
        return {
            "asset_id": view.spec.id,
            "component": None,
            "rul_prediction": None,
            "contributing_factors": [],
            "recommended_actions": [],
        }
    return {
        "asset_id": view.spec.id,
        "component": rul.component,
        "rul_prediction": rul_prediction(rul),
        "contributing_factors": [f.model_dump() for f in rul.contributing_factors],
        "recommended_actions": recommended_actions(view.spec, rul),
    }


def anomaly_row(record: AnomalyRecord, ack: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": record.anomaly_id,
        "asset_id": record.machine_id,
        "sensor_id": record.sensor_id,
        "timestamp": iso(record.timestamp),
        "type": record.type.value,
        "severity": record.severity.value,
        "anomaly_score": record.score,
        "value": record.value,
        "expected_value": record.expected_value,
        "reason": record.reason,
        "detector": record.detector,
        "contributing_sensors": list(record.contributing_sensors),
        "acknowledged": ack is not None,
        "acknowledged_by": None if ack is None else ack["by"],
        "acknowledged_at": None if ack is None else iso(ack["at"]),
        "note": None if ack is None else ack.get("note"),
    }


def asset_answer(view: AssetView, anomalies: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /assets/{id}``."""
    spec, state = view.spec, view.state
    return {
        "id": spec.id,
        "name": spec.name or spec.id,
        "type": spec.type,
        "kind": spec.kind.value,
        "site": spec.site,
        "line": spec.line,
        "critical": spec.critical,
        "status": view.status,
        "health_score": view.health_score,
        "version": None if state is None else state.version,
        "source": view.source,
        "current_state": {
            "last_update": None if state is None else iso(state.last_update),
            "sensors": sensor_rows(view),
        },
        "derived_metrics": {} if state is None else dict(state.derived_metrics),
        "features": {} if state is None else {k: dict(v) for k, v in state.features.items()},
        "predicted_failure": predicted_failure(view.rul),
        "rul": None if view.rul is None else rul_prediction(view.rul),
        "anomalies": anomalies,
    }

"""Work orders for a CMMS (SAP PM, Maximo, Fiix...): a CSV export and a JSON webhook body.

The webhook (``alerting.cmms_webhook_url`` in the plant file) receives one POST per
change of a work order, with ``Content-Type: application/json`` and a body of::

    {"event": "workorder.created" | "workorder.scheduled" | "workorder.updated",
     "sent_at": "<ISO 8601 UTC>",
     "work_order": {<the WorkOrder record: schemas/maintenance.py, as in the API>}}

plus the header ``Idempotency-Key: <workorder_id>:<revision>``: a receiver that sees a
key twice (a retry after a timeout) must not apply it twice. Failed posts are retried
with exponential backoff (``alerting.webhook_retries`` times).

>>> from datetime import UTC, datetime
>>> from schemas.maintenance import WorkOrder
>>> wo = WorkOrder(workorder_id="WO-2026-11-0001", asset_id="P-201", type="predictive",
...     title="Repair bearing wear", created_at=datetime(2026, 11, 29, tzinfo=UTC))
>>> print(to_csv([wo]).splitlines()[1].split(",Repair")[0])
WO-2026-11-0001,P-201,predictive,medium,scheduled
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from schemas.maintenance import WorkOrder

COLUMNS = (
    "workorder_id",
    "asset_id",
    "type",
    "priority",
    "status",
    "title",
    "failure_mode",
    "scheduled_date",
    "scheduled_end",
    "due_by",
    "assigned_technician_id",
    "estimated_duration_hours",
    "required_skills",
    "parts",
    "labor_cost",
    "parts_cost",
    "downtime_cost",
    "risk_cost",
    "created_at",
    "completed_at",
    "unplaced_reason",
)


def _iso(t: datetime | None) -> str:
    return t.isoformat().replace("+00:00", "Z") if t is not None else ""


def row(o: WorkOrder) -> dict[str, Any]:
    return {
        "workorder_id": o.workorder_id,
        "asset_id": o.asset_id,
        "type": o.type.value,
        "priority": o.priority.value,
        "status": o.status.value,
        "title": o.title,
        "failure_mode": o.failure_mode.value if o.failure_mode else "",
        "scheduled_date": _iso(o.scheduled_date),
        "scheduled_end": _iso(o.scheduled_end),
        "due_by": _iso(o.due_by),
        "assigned_technician_id": o.assigned_technician_id or "",
        "estimated_duration_hours": o.estimated_duration_hours,
        "required_skills": ";".join(o.required_skills),
        "parts": ";".join(f"{p.part_number}x{p.quantity}" for p in o.parts_required),
        "labor_cost": o.estimated_cost.labor,
        "parts_cost": o.estimated_cost.parts,
        "downtime_cost": o.estimated_cost.downtime,
        "risk_cost": o.estimated_cost.risk,
        "created_at": _iso(o.created_at),
        "completed_at": _iso(o.completed_at),
        "unplaced_reason": o.unplaced_reason or "",
    }


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet reads a cell starting with one of these as a formula (OWASP, CSV
injection)."""


def cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading apostrophe
    (shown as text, not evaluated); numbers and other text are unchanged.

    >>> cell("=HYPERLINK(1)"), cell("@SUM(A1)"), cell("Repair"), cell(-2.5)
    ("'=HYPERLINK(1)", "'@SUM(A1)", 'Repair', -2.5)
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(orders: Iterable[WorkOrder]) -> str:
    """RFC 4180 CSV with a header row (lists joined by ``;``, parts as ``number x qty``);
    every text cell passes :func:`cell`, so none is a formula."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for o in orders:
        writer.writerow({k: cell(v) for k, v in row(o).items()})
    return out.getvalue()


def webhook_body(event: str, order: WorkOrder, sent_at: datetime) -> dict[str, Any]:
    return {
        "event": f"workorder.{event}",
        "sent_at": _iso(sent_at),
        "work_order": order.model_dump(mode="json"),
    }


def idempotency_key(order: WorkOrder) -> str:
    return f"{order.workorder_id}:{order.revision}"

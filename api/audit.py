"""The audit trail: every change made through the API, published as an
:class:`~schemas.audit.AuditRecord` on ``tf.event.audit.<action>`` (JetStream ``EVENTS``,
deduplicated by its id) for the history writer to keep in ``audit_log``.

Recording happens after the change succeeded. If NATS cannot take the record, the change
stands, the failure is logged and counted (``audit_unrecorded``), and the caller still
gets its answer: the audit trail must not make the plant's controls unusable.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from api.auth import Principal
from schemas import subjects
from schemas.audit import AuditRecord

log = logging.getLogger("twinfleet.api")


async def record(
    services: Any,
    who: Principal,
    action: str,
    target: str | None,
    detail: dict[str, Any] | None = None,
) -> AuditRecord:
    entry = AuditRecord(
        at=int(time.time() * 1000),
        actor=who.subject,
        role=who.role.value,
        action=action,
        target=target,
        detail=detail or {},
    )
    try:
        await services.view.js.publish(
            subjects.audit(action),
            entry.model_dump_json().encode(),
            headers={"Nats-Msg-Id": f"audit-{entry.audit_id}"},
            timeout=2.0,
        )
        services.counters["audit_recorded"] += 1
    except Exception as exc:
        services.counters["audit_unrecorded"] += 1
        log.warning("audit record %s of %s not published: %s", action, who.subject, exc)
    return entry

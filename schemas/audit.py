"""Audit records: who changed what through the API, and when.

The API publishes one per change it makes (acknowledging an anomaly, cloning a twin,
running a what-if, retiring a clone) on ``tf.event.audit.<action>``, into JetStream's
``EVENTS`` stream, with the record's id as ``Nats-Msg-Id``; the history writer stores it
in ``audit_log`` under that id, so it is kept once.

>>> r = AuditRecord(actor="olga", role="operator", action="acknowledge_anomaly",
...                 target="M-101:-:1700000000000:threshold", at=1_700_000_000_000)
>>> len(r.audit_id), r.action
(32, 'acknowledge_anomaly')
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import EpochMs, Identifier

Action = Annotated[str, Field(pattern=r"^[a-z][a-z_]{0,63}$")]


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    audit_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] = Field(
        default_factory=lambda: uuid.uuid4().hex
    )
    at: EpochMs
    actor: Annotated[str, Field(min_length=1, max_length=200)]
    role: Identifier
    action: Action
    target: Annotated[str, Field(max_length=500)] | None = None
    detail: dict[str, Any] = Field(default_factory=dict)

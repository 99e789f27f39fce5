"""NATS subject names, documented once.

=====================================  ==========================================
subject                                 what travels on it
=====================================  ==========================================
``tf.telemetry.<site>.<machine>``       TelemetryBatch for one machine of that site
                                        (JetStream, edge -> twins, ``Nats-Msg-Id`` =
                                        ``<gateway>:<local id>``); a batch of another
                                        site or machine is refused by the hub
``_INBOX.<client>.<unique>``            replies to one client (its own inbox prefix)
``tf.twin.<machine>``                   TwinState after a change
``tf.event.anomaly.<machine>``          AnomalyRecord
``tf.event.rul.<machine>``              RulPrediction
``tf.event.workorder.<id>``             WorkOrder
``tf.event.audit.<action>``             AuditRecord (a change made through the API)
``tf.event.alert.<alert_id>``           Alert, after every change (raised, repeated,
                                        acknowledged, escalated, resolved)
``tf.notify.alert``                     AlertNotification (the NATS alert channel)
``tf.maintenance.<operation>``          request/reply API of the maintenance service
                                        (schemas.maintenance_api)
``tf.dlq.<source>``                     rejected input with the reason
``tf.edge.<gateway>.alert.<machine>``   EdgeAnomaly raised locally by a gateway (core
                                        NATS on the gateway's own leaf node; it
                                        keeps firing while the hub is unreachable)
=====================================  ==========================================

Tokens are validated identifiers (no dots, spaces or wildcards), so a machine id can
never widen a subscription.

>>> telemetry("plant-a", "P-101")
'tf.telemetry.plant-a.P-101'
>>> telemetry("plant a", "P-101")
Traceback (most recent call last):
...
ValueError: site 'plant a' is not a valid subject token
"""

from __future__ import annotations

import re

from schemas.common import ID_PATTERN

PREFIX = "tf"
TELEMETRY_ALL = f"{PREFIX}.telemetry.>"
TWIN_ALL = f"{PREFIX}.twin.*"
ANOMALY_ALL = f"{PREFIX}.event.anomaly.*"
RUL_ALL = f"{PREFIX}.event.rul.*"
WORKORDER_ALL = f"{PREFIX}.event.workorder.*"
ALERT_ALL = f"{PREFIX}.event.alert.*"
NOTIFY_ALERT = f"{PREFIX}.notify.alert"
MAINTENANCE = f"{PREFIX}.maintenance"
EVENT_ALL = f"{PREFIX}.event.>"

_TOKEN = re.compile(ID_PATTERN)


def _token(kind: str, value: str) -> str:
    # fullmatch: with match, "$" would also accept a trailing newline ("P-101\n").
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError(f"{kind} {value!r} is not a valid subject token")
    return value


def telemetry(site_id: str, machine_id: str) -> str:
    return f"{PREFIX}.telemetry.{_token('site', site_id)}.{_token('machine', machine_id)}"


def telemetry_address(subject: str) -> tuple[str, str] | None:
    """The (site, machine) a telemetry subject names; None for any other subject.

    >>> telemetry_address("tf.telemetry.plant-a.P-101")
    ('plant-a', 'P-101')
    >>> telemetry_address("tf.telemetry.plant-a.P-101.x") is None
    True
    """
    head = f"{PREFIX}.telemetry."
    if not subject.startswith(head):
        return None
    tokens = subject[len(head) :].split(".")
    if len(tokens) != 2 or not all(_TOKEN.fullmatch(t) for t in tokens):
        return None
    return tokens[0], tokens[1]


def inbox(client: str) -> str:
    """A client's own inbox prefix (``nats.connect(inbox_prefix=...)``): its replies
    arrive on ``_INBOX.<client>.<unique>``, so permissions can give each client its own.

    >>> inbox("gw-north")
    '_INBOX.gw-north'
    """
    return f"_INBOX.{_token('client', client)}"


def telemetry_site(site_id: str) -> str:
    return f"{PREFIX}.telemetry.{_token('site', site_id)}.*"


def twin(machine_id: str) -> str:
    return f"{PREFIX}.twin.{_token('machine', machine_id)}"


def anomaly(machine_id: str) -> str:
    return f"{PREFIX}.event.anomaly.{_token('machine', machine_id)}"


def rul(machine_id: str) -> str:
    return f"{PREFIX}.event.rul.{_token('machine', machine_id)}"


def workorder(workorder_id: str) -> str:
    return f"{PREFIX}.event.workorder.{_token('work order', workorder_id)}"


def alert(alert_id: str) -> str:
    return f"{PREFIX}.event.alert.{_token('alert', alert_id)}"


def maintenance(operation: str) -> str:
    """``operation`` is dotted on purpose (``workorders.create``); each part is a token."""
    return ".".join([MAINTENANCE, *(_token("operation", p) for p in operation.split("."))])


def audit(action: str) -> str:
    return f"{PREFIX}.event.audit.{_token('action', action)}"


def edge_alert(gateway_id: str, machine_id: str) -> str:
    gateway = _token("gateway", gateway_id)
    return f"{PREFIX}.edge.{gateway}.alert.{_token('machine', machine_id)}"


def edge_alert_all(gateway_id: str) -> str:
    return f"{PREFIX}.edge.{_token('gateway', gateway_id)}.alert.*"


def edge_stream(site_id: str) -> str:
    """The JetStream stream on a gateway's leaf node that holds one site's telemetry
    (store-and-forward; the hub sources it). One per site because nats-server 2.9 tells
    a stream's sources apart by stream name and domain only, not by filter."""
    return f"TF_EDGE_{_token('site', site_id)}"


def dead_letter(source: str) -> str:
    return f"{PREFIX}.dlq.{_token('source', source)}"

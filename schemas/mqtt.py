"""Where a sensor's values arrive over MQTT: a plain topic, or a Sparkplug B metric.

A machine type's sensors are declared once, so the addresses are *templates*: ``{site}``,
``{line}``, ``{machine}`` and ``{sensor}`` are replaced by each machine's own ids and the
sensor's name (every machine of a type publishes on its own topic, or is its own
Sparkplug device). Instead of an address on every sensor, the plant file's ``mqtt``
section (:class:`MqttSettings`) can give *rules* that map every sensor of the machines
they apply to; a sensor's own address of the same protocol wins over a rule.

**Plain MQTT** (:class:`MqttAddress`): one topic per sensor. The payload is a JSON number
(the value, timed when the hub receives it) or a JSON object ``{"value": 4.2,
"timestamp": 1764763200000, "quality": 0}`` (``timestamp`` in ms since the epoch, or an
ISO 8601 text; ``quality`` 0 good, 1 uncertain, 2 bad; both optional). Send a timestamp
when a device may resend: a resent reading with the same topic, timestamp and value is
applied once.

**Sparkplug B** (:class:`SparkplugAddress`): the metric ``metric`` of the device
``device`` of the edge node ``edge_node`` in the group ``group``; by default the group is
the site, the edge node the line and the device the machine.

>>> a = SparkplugAddress(metric="Motor/Vibration")
>>> a.expand(site="north", line="L1", machine="M-101", sensor="vibration")
('north', 'L1', 'M-101', 'Motor/Vibration')
>>> MqttAddress(topic="{site}/{machine}/{sensor}").expand(
...     site="north", line="L1", machine="M-1", sensor="temp")
'north/M-1/temp'
>>> MqttAddress(topic="plant/+/vibration")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for MqttAddress
topic
  Value error, 'plant/+/vibration': a topic may not contain the wildcards + or #, ...
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_PLACEHOLDER = re.compile(r"\{(site|line|machine|sensor)\}")
_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_\-:{}]+$")
_ID_LEVEL = re.compile(r"^(\{(site|line|machine|sensor)\}|[A-Za-z0-9_\-]+)+$")


def _check_placeholders(text: str) -> None:
    leftover = _PLACEHOLDER.sub("", text)
    if "{" in leftover or "}" in leftover:
        raise ValueError(
            f"{text!r}: the only placeholders are {{site}}, {{line}}, {{machine}} and {{sensor}}"
        )


def _topic(text: str) -> str:
    """A plain MQTT topic template: levels of letters, digits, ``_ - :`` and
    placeholders (no wildcards: a sensor's topic is one topic; no dots or spaces: the
    hub's broker maps levels to NATS subject tokens)."""
    levels = text.split("/")
    if not text or any(not _TOPIC_LEVEL.match(level) for level in levels):
        raise ValueError(
            f"{text!r}: a topic may not contain the wildcards + or #, nor spaces, dots or "
            "empty levels (levels of letters, digits, _ - : and {placeholders})"
        )
    if levels[0] == "spBv1" or text.startswith("$"):
        raise ValueError(f"{text!r}: spBv1.0/ and $ topics are reserved (Sparkplug, broker)")
    _check_placeholders(text)
    return text


def _id_level(text: str) -> str:
    """A Sparkplug group, edge node or device id template (one topic level)."""
    if not _ID_LEVEL.match(text):
        raise ValueError(
            f"{text!r}: Sparkplug ids are one topic level of letters, digits, _ and - "
            "(or {site}, {line}, {machine}, {sensor})"
        )
    _check_placeholders(text)
    return text


TopicTemplate = Annotated[str, Field(max_length=200), AfterValidator(_topic)]
IdTemplate = Annotated[str, Field(max_length=100), AfterValidator(_id_level)]


def _fill(template: str, site: str, line: str, machine: str, sensor: str) -> str:
    return (
        template.replace("{site}", site)
        .replace("{line}", line)
        .replace("{machine}", machine)
        .replace("{sensor}", sensor)
    )


class MqttAddress(BaseModel):
    """A sensor published on its own plain MQTT topic (JSON payload, see the module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["mqtt"] = "mqtt"
    topic: TopicTemplate = Field(description='e.g. "{site}/{machine}/vibration"')

    def expand(self, *, site: str, line: str, machine: str, sensor: str) -> str:
        return _fill(self.topic, site, line, machine, sensor)


class SparkplugAddress(BaseModel):
    """A sensor that is one metric of a Sparkplug B device (or of its edge node, when
    ``device`` is empty)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["sparkplug"] = "sparkplug"
    metric: Annotated[str, Field(min_length=1, max_length=200)]
    group: IdTemplate = "{site}"
    edge_node: IdTemplate = "{line}"
    device: IdTemplate | Literal[""] = "{machine}"

    def expand(
        self, *, site: str, line: str, machine: str, sensor: str
    ) -> tuple[str, str, str, str]:
        """(group, edge node, device or "", metric) for one machine's sensor."""
        return (
            _fill(self.group, site, line, machine, sensor),
            _fill(self.edge_node, site, line, machine, sensor),
            _fill(self.device, site, line, machine, sensor),
            _fill(self.metric, site, line, machine, sensor),
        )


class SparkplugRule(SparkplugAddress):
    """Every sensor of the machines it applies to (all, or those of ``machine_types``)
    is a Sparkplug metric: by default the metric named as the sensor, of the device named
    as the machine, of the edge node named as the line, in the group named as the site."""

    metric: Annotated[str, Field(min_length=1, max_length=200)] = "{sensor}"
    machine_types: list[str] = Field(default_factory=list)


class TopicRule(MqttAddress):
    """Every sensor of the machines it applies to has the plain topic ``topic``."""

    topic: TopicTemplate = "{site}/{line}/{machine}/{sensor}"
    machine_types: list[str] = Field(default_factory=list)


class MqttSettings(BaseModel):
    """The plant file's ``mqtt`` section: which sensors arrive over MQTT, by rule.

    >>> rules = MqttSettings.model_validate({"sparkplug": [{"machine_types": ["pump"]}]})
    >>> rules.sparkplug[0].expand(site="s", line="l", machine="P-1", sensor="flow")
    ('s', 'l', 'P-1', 'flow')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sparkplug: list[SparkplugRule] = Field(default_factory=list)
    topics: list[TopicRule] = Field(default_factory=list)

    def sparkplug_rule(self, machine_type: str) -> SparkplugRule | None:
        return next(
            (r for r in self.sparkplug if not r.machine_types or machine_type in r.machine_types),
            None,
        )

    def topic_rule(self, machine_type: str) -> TopicRule | None:
        return next(
            (r for r in self.topics if not r.machine_types or machine_type in r.machine_types),
            None,
        )

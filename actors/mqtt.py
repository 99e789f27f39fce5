"""The MQTT and Sparkplug B intake (:mod:`edge.mqtt_intake`) as a Ray actor, restarted
by Ray if it dies. ``twinfleet up`` starts one :class:`MqttIntakeActor` next to the
history writer. A restarted intake resumes from its durable consumer of the ``MQTT``
stream (a message it had not acknowledged comes back and is applied once: its telemetry
carries the same message id); its Sparkplug host state starts empty, so the first data
of each edge node asks for a rebirth, as the specification expects of a host that
restarted.

Its NATS password is not an argument (any client of the cluster can read those): the
URL names the user and the actor reads the password on its node
(:func:`bus.connect.nats_url_on_node`).
"""

from __future__ import annotations

from typing import Any

import ray


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class MqttIntakeActor:
    def __init__(
        self,
        plant_json: str,
        nats_url: str,
        mqtt_port: int,
        device_topics: list[str],
    ) -> None:
        from urllib.parse import unquote, urlsplit

        from bus.connect import nats_url_on_node
        from edge.mqtt_intake import MqttIntake
        from schemas.plant import Plant

        url = nats_url_on_node(nats_url)
        parts = urlsplit(url)
        self.intake = MqttIntake(
            Plant.model_validate_json(plant_json),
            url,
            user=parts.username,
            password=None if parts.password is None else unquote(parts.password),
            mqtt_port=mqtt_port,
            device_topics=device_topics,
        )
        self.started = False

    async def start(self) -> bool:
        if not self.started:
            await self.intake.start()
            self.started = True
        return True

    async def status(self) -> dict[str, Any]:
        await self.start()
        return self.intake.status()

    async def stop(self) -> None:
        await self.intake.stop()

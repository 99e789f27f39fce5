"""MQTT device users: their namespaces, the hub configuration, ``twinfleet mqtt add``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinfleet.cli import main
from twinfleet.natsconf import MqttDevice, hub_config, load_mqtt_devices, mqtt_devices_dir


def test_a_sparkplug_node_may_publish_only_its_own_messages() -> None:
    node = MqttDevice.new("line-1", sparkplug=("north", "L1"))
    assert node.publish_subjects() == [
        "spBv1//0.north.NBIRTH.L1",
        "spBv1//0.north.NDATA.L1",
        "spBv1//0.north.NDEATH.L1",
        "spBv1//0.north.DBIRTH.L1.*",
        "spBv1//0.north.DDATA.L1.*",
        "spBv1//0.north.DDEATH.L1.*",
    ]
    assert "spBv1//0.north.NCMD.L1" in node.subscribe_subjects()


def test_device_names_and_topics_are_checked() -> None:
    with pytest.raises(ValueError, match="Sparkplug edge node or has plain topics"):
        MqttDevice.new("both", sparkplug=("g", "n"), topics=["a/b"])
    with pytest.raises(ValueError, match="wildcards"):
        MqttDevice.new("wild", topics=["north/+/speed"])
    with pytest.raises(ValueError, match="concrete"):
        MqttDevice.new("templated", topics=["north/{machine}/speed"])
    with pytest.raises(ValueError):
        MqttDevice.new("bad name!", topics=["a/b"])


def test_the_hub_config_has_the_listener_and_mqtt_only_users(tmp_path: Path) -> None:
    fan = MqttDevice.new("fan-1", topics=["north/F-1/speed"])
    text = hub_config(
        port=4222,
        leaf_port=7422,
        store_dir=tmp_path,
        internal_password="x",
        gateways=[],
        mqtt_port=1883,
        mqtt_devices=[fan],
    )
    assert 'mqtt { listen: "127.0.0.1:1883" }' in text
    line = next(x for x in text.splitlines() if '"mqtt-fan-1"' in x)
    assert 'allowed_connection_types: ["MQTT"]' in line
    assert '"north.F-1.speed"' in line
    assert "mqtt {" not in hub_config(
        port=4222, leaf_port=7422, store_dir=tmp_path, internal_password="x", gateways=[]
    )


def test_mqtt_add_saves_credentials_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path)
    assert main(["mqtt", "add", "line-1", "--sparkplug", "north/L1", "--data-dir", data]) == 0
    saved = json.loads((mqtt_devices_dir(tmp_path) / "line-1.json").read_text())
    assert (saved["group"], saved["edge_node"]) == ("north", "L1")
    assert [d.user for d in load_mqtt_devices(mqtt_devices_dir(tmp_path))] == ["mqtt-line-1"]
    assert main(["mqtt", "add", "line-1", "--sparkplug", "north/L1", "--data-dir", data]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["mqtt", "add", "x", "--sparkplug", "north", "--data-dir", data]) == 2
    assert "GROUP/EDGE_NODE" in capsys.readouterr().err
    assert main(["mqtt", "add", "y", "--topic", "a/#", "--data-dir", data]) == 2
    assert "wildcards" in capsys.readouterr().err

"""nats-server's configurations hold bcrypt hashes, not passwords (issue 18, finding 12):
whoever reads the file learns no password. That the servers still let every user in with
its password is held by every test that starts a hub (tests/security/test_bus_inbox.py,
tests/edge/)."""

from __future__ import annotations

import re
from pathlib import Path

import bcrypt

from twinfleet.natsconf import GatewayCredentials, MqttDevice, edge_config, hub_config


def test_no_password_is_written_in_the_clear(tmp_path: Path) -> None:
    gw = GatewayCredentials.new("gw-north", ["plant-north"])
    device = MqttDevice.new("press-1", sparkplug=("plant", "press-1"))
    hub = hub_config(
        port=4222,
        leaf_port=7422,
        store_dir=tmp_path,
        internal_password="internal-s3cret",
        gateways=[gw],
        mqtt_port=1883,
        mqtt_devices=[device],
    )
    edge = edge_config(
        creds=gw,
        port=4223,
        store_dir=tmp_path,
        gateway_password="gw-s3cret",
        hub_leaf_url="nats-leaf://127.0.0.1:7422",
        max_store_bytes=1 << 30,
    )
    secrets = ["internal-s3cret", gw.direct_password, gw.leaf_password, device.password]
    for secret in secrets:
        assert secret not in hub
    # the edge's own user is hashed; the leaf remote must dial the hub with its password
    assert "gw-s3cret" not in edge and re.search(r'password: "\$2b\$10\$', edge)
    hashes = dict(re.findall(r'user: "([^"]+)", password: "(\$2b\$[^"]+)"', hub))
    assert set(hashes) == {"twinfleet", gw.direct_user, gw.leaf_user, device.user}
    for user, secret in zip(
        ["twinfleet", gw.direct_user, gw.leaf_user, device.user], secrets, strict=True
    ):
        assert bcrypt.checkpw(secret.encode(), hashes[user].encode())

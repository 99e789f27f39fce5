"""The gateway hands the OPC UA trust decision of its configuration to the driver."""

from __future__ import annotations

from pathlib import Path

from edge.config import GatewayConfig
from edge.gateway import Gateway
from schemas.plant import load_plant
from twinfleet.cli import _example_plant_path
from twinfleet.natsconf import GatewayCredentials


def test_trust_on_first_use_reaches_the_opcua_driver(tmp_path: Path) -> None:
    creds = GatewayCredentials.new("gw-north", ["plant-north"])
    config = GatewayConfig.model_validate(
        {
            "gateway_id": "gw-north",
            "plant": str(_example_plant_path()),
            "hub": {"credentials": str(tmp_path / "creds.json")},
            "store": {"dir": str(tmp_path / "edge")},
            "opcua": [
                {
                    "endpoint": "opc.tcp://127.0.0.1:4840",
                    "machines": ["M-101"],
                    "security": {
                        "certificate": str(tmp_path / "gw.der"),
                        "private_key": str(tmp_path / "gw.pem"),
                        "trust_on_first_use": True,
                    },
                }
            ],
        }
    )
    gateway = Gateway(config, load_plant(config.plant), creds)
    [driver] = gateway.build_drivers()
    assert driver.security.server_certificate is None
    assert driver.security.trust_on_first_use is True

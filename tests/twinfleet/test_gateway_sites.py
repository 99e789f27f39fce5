"""twinfleet up tells the machine actors which sites each registered gateway serves."""

from __future__ import annotations

from pathlib import Path

from twinfleet.natsconf import GatewayCredentials, gateways_dir
from twinfleet.up import registered_gateway_sites


def test_the_registered_gateways_sites_are_read_from_the_data_directory(tmp_path: Path) -> None:
    assert registered_gateway_sites(tmp_path) == {}
    GatewayCredentials.new("gw-north", ["plant-north"]).save(gateways_dir(tmp_path))
    GatewayCredentials.new("gw-both", ["plant-north", "plant-south"]).save(gateways_dir(tmp_path))
    assert registered_gateway_sites(tmp_path) == {
        "gw-both": ["plant-north", "plant-south"],
        "gw-north": ["plant-north"],
    }

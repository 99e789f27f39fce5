"""``serve run serve_app:app nats_url=... plant=... secret=...`` builds the application."""

from __future__ import annotations

from ray.serve import Application

import serve_app
from twinfleet.cli import _example_plant_path


def test_the_serve_run_builder_makes_the_application() -> None:
    app = serve_app.app(
        {
            "plant": str(_example_plant_path()),
            "nats_url": "nats://127.0.0.1:4222",
            "secret": "s" * 40,
            "replicas": "2",
        }
    )
    assert isinstance(app, Application)

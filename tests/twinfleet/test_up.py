"""``twinfleet up`` as a user runs it: real nats-server, real PostgreSQL, real Ray, a
simulated plant."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.base import FieldValue
from drivers.sparkplug_sim import SparkplugEdgeNode
from edge.sparkplug import SparkplugMap
from schemas import load_plant
from twinfleet.services import free_port, port_is_free


def _example_plant() -> Path:
    return Path(__file__).parents[2] / "twinfleet" / "plants" / "example.yaml"


def twinfleet(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("NATS_URL", "RAY_ADDRESS", "DATABASE_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "twinfleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_up_runs_the_plant_through_nats_and_ray_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    port, api_port, db_port, mqtt_port = free_port(), free_port(), free_port(), free_port()
    done = twinfleet(
        "up",
        "--db-port",
        str(db_port),
        "--days",
        "1",
        "--lives",
        "6",
        "--nats-port",
        str(port),
        "--api-port",
        str(api_port),
        "--leaf-port",
        str(free_port()),
        "--mqtt-port",
        str(mqtt_port),
        "--data-dir",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"nats-server with JetStream on nats://127.0.0.1:{port}" in out
    assert "fleet: 52 machines on 1 host actor(s)" in out
    assert f"API: http://127.0.0.1:{api_port}" in out
    assert "it answers for 52 machines" in out
    assert "== summary:" in out
    # every message published was applied by the actors (counted by the host)
    summary = out.split("== summary:")[1]
    sent = int(summary.split(" messages through NATS")[0].split(" in ")[-1].replace(",", ""))
    applied = int(summary.split("machines, ")[1].split(" messages applied")[0].replace(",", ""))
    assert applied == sent > 0
    # and every reading reached PostgreSQL through the history writer
    readings = int(summary.split(" readings in ")[0].strip().replace(",", ""))
    assert f"history: {readings:,} readings stored in this run (" in out
    assert "0 messages to go" in out and "0 rows refused" in out
    assert "maintenance: alerts (7 rules), predictive work orders and the plan" in out
    assert "== maintenance:" in out and "open work orders" in out
    # it ends with the warning lead times and the alarm KPIs, on plant time
    assert "== warnings before failures" in out and "failure warnings:" in out
    assert "== alarms (plant time)" in out and "alarm KPIs" in out and "by priority" in out
    assert f"PostgreSQL 15 on postgresql://twinfleet@127.0.0.1:{db_port}/twinfleet" in out
    assert "stopped: API, fleet, maintenance, history writer, Ray, PostgreSQL and nats-serv" in out
    assert port_is_free(db_port)  # PostgreSQL is gone
    assert (tmp_path / "nats" / "jetstream").is_dir()  # JetStream files in the data directory
    assert port_is_free(port)  # nats-server is gone
    assert port_is_free(api_port)  # and the API
    # A second run on the same data would replay days its twins have seen: it says so,
    # and stops before starting anything else.
    again = twinfleet(
        *("up", "--db-port", str(db_port), "--days", "1", "--lives", "6"),
        *("--nats-port", str(port), "--api-port", str(api_port)),
        *("--leaf-port", str(free_port()), "--mqtt-port", str(mqtt_port)),
        *("--data-dir", str(tmp_path)),
    )
    assert again.returncode == 2, again.stdout + again.stderr
    assert "the history already holds this plant's readings up to" in again.stderr
    assert f"remove {tmp_path} or give another --data-dir" in again.stderr
    assert "Ray:" not in again.stdout  # refused before Ray started
    assert port_is_free(port) and port_is_free(db_port)  # and what it started is stopped


@pytest.mark.slow
def test_up_uses_the_database_at_database_url(tmp_path: Path) -> None:
    """Given ``DATABASE_URL``, no cluster is started: the schema, the plant and the
    history go to that database."""
    import psycopg

    from twinfleet.postgres import PostgresServer

    with PostgresServer(tmp_path / "external", port=free_port()) as external:
        env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "RAY_ADDRESS")}
        env["DATABASE_URL"] = external.url
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "twinfleet.cli",
                "up",
                "--days",
                "0.1",
                "--lives",
                "6",
                "--nats-port",
                str(free_port()),
                "--api-port",
                str(free_port()),
                "--leaf-port",
                str(free_port()),
                "--mqtt-port",
                str(free_port()),
                "--data-dir",
                str(tmp_path / "data"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "using the PostgreSQL at DATABASE_URL" in done.stdout
        assert not (tmp_path / "data" / "postgres").exists()  # no cluster of its own
        readings = int(done.stdout.split("== summary: ")[1].split(" readings")[0].replace(",", ""))
        with psycopg.connect(external.url) as conn:
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            assets = conn.execute("SELECT count(*) FROM assets").fetchone()[0]
        assert (stored, assets) == (readings, 52)


def test_up_says_clearly_when_the_nats_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = twinfleet("up", "--nats-port", str(port), "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert f"port {port} is already taken" in done.stderr
    assert "Traceback" not in done.stderr


def _session_processes(sid: int) -> list[str]:
    """The command lines of the processes still alive in session ``sid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[4]) == sid and fields[0] != "Z":
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                out.append(cmdline.decode(errors="replace").strip())
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_everything_it_started(tmp_path: Path, stop_signal: str) -> None:
    import json
    import signal
    import time
    import urllib.request

    port, api_port, db_port, mqtt_port = free_port(), free_port(), free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("NATS_URL", "RAY_ADDRESS", "DATABASE_URL")
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twinfleet.cli",
            "up",
            "--db-port",
            str(db_port),
            "--days",
            "0.2",
            "--lives",
            "6",
            "--nats-port",
            str(port),
            "--api-port",
            str(api_port),
            "--leaf-port",
            str(free_port()),
            "--mqtt-port",
            str(mqtt_port),
            "--data-dir",
            str(tmp_path),
            "--stay",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        # as a script's background job (`./scripts/run.sh &`) starts it: SIGINT ignored;
        # in a session of its own, so that whatever it leaves behind can be found
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        start_new_session=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 300
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "services stay up" in line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        assert not port_is_free(port)  # nats-server is up
        # the API stays up too, and a token from `twinfleet token` works on it
        token = twinfleet("token", "--role", "viewer", "--data-dir", str(tmp_path)).stdout.strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/api/v1/assets/M-101",
            headers={"authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.loads(answer.read())["version"] > 0
        # the history of a sensor from PostgreSQL: the simulated hours were all stored
        # before "services stay up" was printed
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/api/v1/sensors/M-101.vibration/timeseries?aggregation=1m",
            headers={"authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            series = json.loads(answer.read())
        # (1-minute rollups are written with the readings, hourly ones every 30 s; 0.2
        # days of 10-minute scans are 28 scans)
        assert series["aggregation"] == "1m" and series["data_points"] >= 20
        assert series["statistics"]["count"] == sum(p["count"] for p in series["data"]) > 0
        # a Sparkplug edge node publishes M-101's vibration to the hub's MQTT listener:
        # the intake (a Ray actor) makes it telemetry, and the twin answers with it
        node = SparkplugEdgeNode(
            SparkplugMap.from_plant(load_plant(_example_plant())),
            "plant-north",
            "north-assembly",
            port=mqtt_port,
            user="twinfleet",
            password=(tmp_path / "nats-password").read_text().strip(),
        ).start()
        try:
            at = int(time.time() * 1000)
            request = urllib.request.Request(
                f"http://127.0.0.1:{api_port}/api/v1/assets/M-101",
                headers={"authorization": f"Bearer {token}"},
            )
            vibration = None
            for _ in range(60):
                node.publish([FieldValue("M-101", "vibration", 4.321, at)])
                with urllib.request.urlopen(request, timeout=30) as answer:
                    rows = json.loads(answer.read())["current_state"]["sensors"]
                vibration = next(r["value"] for r in rows if r["name"] == "vibration")
                if vibration == 4.321:
                    break
                time.sleep(1.0)
            assert vibration == 4.321
        finally:
            node.stop()
        proc.send_signal(getattr(signal, stop_signal))  # Ctrl-C, or a service manager
        asked = time.monotonic()
        rest, _ = proc.communicate(timeout=120)
        print(f"twinfleet up stopped {time.monotonic() - asked:.1f} s after {stop_signal}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out
    assert "stopped: API, fleet, maintenance, history writer, Ray, PostgreSQL and nats-serv" in out
    assert port_is_free(port)
    assert port_is_free(api_port)
    assert port_is_free(db_port)
    # nothing it started is left running (Ray's agents included)
    left = _session_processes(proc.pid)
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _session_processes(proc.pid)
    assert not left, left

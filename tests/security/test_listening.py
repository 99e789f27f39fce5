"""What the main job exposes (issue 18, finding 1): ``twinfleet up`` listens on loopback
only, HAProxy's admin socket is its owner's, Ray refuses a job submitted without its
token, and the secrets are not in what any client of the cluster can read.

One ``twinfleet up --stay`` (a short plant run) is started for the module and stopped
with SIGINT (Ctrl-C) at the end; its process tree (nats-server, PostgreSQL, Ray's GCS,
raylet, agents and workers, HAProxy) is read from ``/proc``.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from twinfleet.services import free_port

pytestmark = pytest.mark.slow

READY = "services stay up; Ctrl-C stops them"
UP = [sys.executable, "-m", "twinfleet.cli", "up", "--stay", "--days", "0.05", "--lives", "6"]


@dataclass(frozen=True)
class Listener:
    protocol: str
    address: str
    port: int
    pid: int
    process: str

    def __str__(self) -> str:
        return f"{self.protocol} {self.address}:{self.port} ({self.process[:90]}, pid {self.pid})"


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    data_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _process_tree(root: int) -> dict[int, str]:
    """``root`` and its descendants: pid -> command line (from ``/proc``)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree = {root}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    names = {}
    for pid in tree:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        names[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return names


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def listeners(root: int) -> list[Listener]:
    """Every TCP socket listening and every UDP socket bound without a peer (it receives
    from anyone) in ``root``'s process tree."""
    tree = _process_tree(root)
    owner = {inode: pid for pid in tree for inode in _socket_inodes(pid)}
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            listening = state == "0A" if protocol.startswith("tcp") else remote.endswith(":0000")
            if not listening or inode not in owner:
                continue
            host, port = local.split(":")
            pid = owner[inode]
            found.append(Listener(protocol, _address(host), int(port, 16), pid, tree[pid]))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data_dir = tmp_path_factory.mktemp("up")
    log = data_dir / "up.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NATS_URL", "RAY_ADDRESS", "DATABASE_URL", "TWINFLEET_API_SECRET")
    }
    ports = ("--nats-port", "--api-port", "--leaf-port", "--mqtt-port", "--db-port")
    args = [a for flag in ports for a in (flag, str(free_port()))]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*UP, "--data-dir", str(data_dir), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    job = Up(process, data_dir, log)
    try:
        deadline = time.monotonic() + 600
        while READY not in job.output():
            if process.poll() is not None:
                pytest.fail(f"twinfleet up exited with {process.returncode}:\n{job.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"twinfleet up did not come up in 600 s:\n{job.output()}")
            time.sleep(0.5)
        yield job
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert "stopped: API, fleet" in job.output(), job.output()[-3000:]


def test_every_listening_socket_of_the_main_job_is_on_loopback(up: Up) -> None:
    found = listeners(up.process.pid)
    processes = " ".join(listener.process for listener in found)
    # the tree really is the whole job: nats-server, PostgreSQL, Ray, HAProxy
    for part in ("nats-server", "postgres", "gcs_server", "raylet", "haproxy"):
        assert part in processes, f"{part} not found among {[str(x) for x in found]}"
    print("\n".join(sorted(str(listener) for listener in found)))  # shown with -rA
    exposed = [str(listener) for listener in found if not is_loopback(listener.address)]
    assert exposed == [], "listening beyond loopback:\n" + "\n".join(exposed)


def test_haproxy_admin_socket_is_for_its_owner_only(up: Up) -> None:
    configs = [
        arg
        for name in _process_tree(up.process.pid).values()
        if "haproxy" in name and " -f " in name
        for arg in [name.split(" -f ", 1)[1].split()[0]]
    ]
    assert configs, "no HAProxy in the job's process tree"
    for config in set(configs):
        line = next(x for x in Path(config).read_text().splitlines() if "stats socket" in x)
        socket_path = Path(line.split()[2])
        mode = socket_path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{socket_path} is mode {mode:o}: {line.strip()}"


def gcs_address(up: Up) -> str:
    gcs = [x for x in listeners(up.process.pid) if "gcs_server" in x.process]
    assert gcs, "no GCS in the job's process tree"
    return f"127.0.0.1:{gcs[0].port}"


REFUSED = """
import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1]).internal_kv_keys(b"", b"serve", timeout=20)
except Exception as exc:
    print("refused", type(exc).__name__, exc)
else:
    print("accepted")
"""


def test_a_job_submitted_without_ray_s_token_is_refused(up: Up, tmp_path: Path) -> None:
    """Ray's token authentication is on: its job submission endpoint (the dashboard
    agent's HTTP server, when it could take its port; the dashboard itself is not
    started) answers 401 without the token, and a driver (a job) with another token is
    refused by the GCS."""
    agents = [x for x in listeners(up.process.pid) if "DashboardAgent" in x.process]
    answers = {}
    body = json.dumps({"entrypoint": "echo pwned", "submission_id": "no-token"}).encode()
    for agent in agents:
        if agent.protocol not in ("tcp", "tcp6"):
            continue
        host = "127.0.0.1" if ipaddress.ip_address(agent.address).is_unspecified else agent.address
        if not is_loopback(host):
            continue  # traffic to loopback only (the first test reports such a listener)
        if ":" in host:
            host = f"[{host}]"
        request = urllib.request.Request(
            f"http://{host}:{agent.port}/api/job_agent/jobs/",
            data=body,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                answers[agent.port] = answer.status
        except urllib.error.HTTPError as refused:
            answers[agent.port] = refused.code
        except (OSError, http.client.HTTPException, ValueError):
            continue  # a gRPC port: not HTTP/1.1
    assert all(code >= 400 for code in answers.values()), answers
    # the job agent answers 401; other HTTP ports of the agent (metrics) 404/405
    assert set(answers.values()) <= {401, 404, 405}, answers

    wrong = tmp_path / "token"
    wrong.write_text("0" * 64)
    wrong.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong), "HOME": str(tmp_path)}
    attempt = subprocess.run(
        [sys.executable, "-c", REFUSED, gcs_address(up)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert attempt.stdout.startswith("refused"), attempt.stdout + attempt.stderr[-2000:]


SCAN = """
import json, sys
from ray._raylet import GcsClient
gcs = GcsClient(address=sys.argv[1])
secrets = json.loads(sys.argv[2])
found = {}
for namespace in (b"serve", b"fun", b"session", b"jobs", b"cluster", b"dashboard", b""):
    for key in gcs.internal_kv_keys(b"", namespace, timeout=30):
        value = gcs.internal_kv_get(key, namespace, timeout=30) or b""
        for name, secret in secrets.items():
            if secret.encode() in key + value:
                found.setdefault(name, []).append(f"{namespace!r}/{key[:60]!r}")
print(json.dumps(found))
"""


def test_secrets_are_not_in_what_the_cluster_stores(up: Up) -> None:
    """The API signing secret and the NATS and PostgreSQL passwords are read on the
    node, not passed as actor or deployment arguments: none is in the GCS's key-value
    store, where Serve keeps its deployments' arguments and any client with the
    cluster's token can read them."""
    secrets = {
        name: (up.data_dir / file).read_text().strip()
        for name, file in (
            ("API signing secret", "api-secret"),
            ("NATS password", "nats-password"),
            ("PostgreSQL password", "postgres-password"),
        )
    }
    address = gcs_address(up)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"  # with the cluster's token (~/.ray/auth_token)
    scan = subprocess.run(
        [sys.executable, "-c", SCAN, address, json.dumps(secrets)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert scan.returncode == 0, scan.stdout + scan.stderr
    found = json.loads(scan.stdout.strip().splitlines()[-1])
    assert found == {}, f"secrets readable from the cluster: {found}"

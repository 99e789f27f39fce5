"""The embedded PostgreSQL 15 cluster ``twinfleet up`` starts when no ``DATABASE_URL`` is given.

:class:`PostgresServer` creates a cluster in ``DATA_DIR/postgres`` on first use (``initdb``
from the OS package ``postgresql-15``, SCRAM passwords, a ``twinfleet`` role and
database), runs ``postgres`` as a child process listening on 127.0.0.1 only, waits until it
accepts connections and stops it (SIGTERM: a fast shutdown, then SIGKILL after a grace
period). The password is kept in ``DATA_DIR/postgres-password`` (mode 0600).

PostgreSQL refuses to run as root. Run as root (containers, CI), the cluster belongs to
the OS user ``postgres`` (made by the package) and the server runs as that user; the
directories above the data directory are made traversable for it (``o+x``), nothing more.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

from twinfleet.services import ChildServer, ServiceError, die_with_parent, port_is_free, secret_file

BIN_DIR = Path("/usr/lib/postgresql/15/bin")
DATABASE = "twinfleet"
ROLE = "twinfleet"

SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",  # TCP only: socket paths under deep data dirs are too long
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "15min",
    "wal_compression": "lz4",
    "default_toast_compression": "lz4",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "logging_collector": "off",
    "log_min_messages": "warning",
}
"""Server settings for ingest on one machine: big WAL between checkpoints (bulk COPY),
lz4 for WAL and TOAST, no replication. ``fsync`` and ``synchronous_commit`` stay on: the
writer acknowledges a message to JetStream only once its rows are durable."""


def _as_postgres_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceError("running as root, and there is no 'postgres' OS user to run PostgreSQL")


def _traversable(path: Path) -> None:
    """Let other users pass through every directory above ``path`` (``o+x``)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class PostgresServer(ChildServer):
    """A PostgreSQL 15 cluster in ``data_dir / "postgres"``, run as a child process.
    Stopped with SIGINT: a fast shutdown (sessions rolled back, a checkpoint)."""

    STOP_SIGNAL = signal.SIGINT
    GRACE_S = 30.0

    def __init__(self, data_dir: Path, port: int = 5433, bin_dir: Path = BIN_DIR) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, got {port}")
        self.data_dir = Path(data_dir).resolve()
        self.cluster = self.data_dir / "postgres"
        self.port = int(port)
        self.bin_dir = Path(bin_dir)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def password(self) -> str:
        return (self.data_dir / "postgres-password").read_text().strip()

    @property
    def url(self) -> str:
        """The connection string (with the password)."""
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def public_url(self) -> str:
        """The connection string without the password (safe to print)."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def passfile(self) -> Path:
        """Write ``DATA_DIR/pgpass`` (libpq's password file, mode 0600) for this
        cluster's role: with ``PGPASSFILE`` pointing at it, :attr:`public_url` connects
        without the password travelling in the URL."""
        path = self.data_dir / "pgpass"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:{self.port}:*:{ROLE}:{self.password}\n")
        path.chmod(0o600)  # an older file keeps its mode on O_TRUNC
        return path

    def _exe(self, name: str) -> str:
        exe = self.bin_dir / name
        if not exe.exists():
            raise ServiceError(
                f"{exe} is not installed (Debian/Ubuntu: apt-get install postgresql-15; "
                "./scripts/setup.sh does it) and DATABASE_URL is not set"
            )
        return str(exe)

    def _run_as(self) -> dict[str, object]:
        user = _as_postgres_user()
        if user is None:
            return {"preexec_fn": die_with_parent}
        uid, gid = user.pw_uid, user.pw_gid

        def drop() -> None:  # in the child, before exec
            os.setgid(gid)
            os.setuid(uid)
            die_with_parent()

        return {"preexec_fn": drop}

    def _initdb(self) -> None:
        from secrets import token_urlsafe

        secret_file(self.data_dir / "postgres-password", lambda: token_urlsafe(24))
        staging = self.data_dir / "postgres.initdb"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        pwfile = staging / "pw"
        pwfile.write_text(self.password)
        user = _as_postgres_user()
        if user is not None:
            _traversable(staging)
            os.chown(staging, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        cluster = staging / "data"
        done = subprocess.run(
            [
                self._exe("initdb"),
                "-D",
                str(cluster),
                "-U",
                ROLE,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ],
            capture_output=True,
            cwd=staging,
            **self._run_as(),  # type: ignore[call-overload]
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise ServiceError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
        with (cluster / "postgresql.conf").open("a") as conf:
            conf.write("\n# twinfleet\n")
            for key, value in SETTINGS.items():
                conf.write(f"{key} = '{value}'\n")
        cluster.rename(self.cluster)  # complete or absent: an interrupted initdb is redone
        shutil.rmtree(staging, ignore_errors=True)

    def start(self, timeout_s: float = 60.0) -> PostgresServer:
        if not (self.cluster / "PG_VERSION").exists():
            self._initdb()
        if not port_is_free(self.port):
            raise ServiceError(
                f"port {self.port} is already taken: stop what uses it, choose another "
                "port (--db-port), or point DATABASE_URL at a running PostgreSQL"
            )
        user = _as_postgres_user()
        if user is not None:
            _traversable(self.cluster)
        log = self.data_dir / "postgres.log"
        with log.open("ab") as out:
            if user is not None:
                os.chown(log, user.pw_uid, user.pw_gid)
            self.process = subprocess.Popen(
                [self._exe("postgres"), "-D", str(self.cluster), "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                **self._run_as(),  # type: ignore[call-overload]
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"postgres exited with code {self.process.returncode}; see {log}"
                )
            if self._accepts():
                self._ensure_database()
                return self
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"PostgreSQL did not accept connections within {timeout_s} s")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                pass
        except OSError:
            return False
        import psycopg

        try:
            with psycopg.connect(
                f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/postgres",
                connect_timeout=2,
            ):
                return True
        except psycopg.OperationalError:  # still starting up, or recovering
            return False

    def _ensure_database(self) -> None:
        import psycopg

        admin = f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if found.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

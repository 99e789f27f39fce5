"""Connecting to the bus from a process Ray started, without the secret travelling.

Secrets reach the processes Ray starts through the node's environment, never as actor or
deployment arguments (which any client of the cluster can read): ``twinfleet up`` sets
``TWINFLEET_NATS_PASSWORD_FILE`` (and ``TWINFLEET_API_SECRET_FILE``, libpq's
``PGPASSFILE``) before it starts Ray, so its workers inherit them; on a cluster, set them
in the environment of ``ray start`` on every node, pointing at files readable by their
owner only. A NATS URL that travels names the user and no password; the process fills the
password in on its node (:func:`nats_url_on_node`).

When the hub's NATS ports have TLS (``twinfleet pki init``), a process trusts the hub's
CA named by ``TWINFLEET_NATS_CA_FILE`` on its node: :func:`nats_tls_on_node` is the
``tls=`` argument of ``nats.connect`` (nats-py switches to TLS when the server requires
it, whatever the URL's scheme). A ``nats.connect`` given no ``tls=`` uses Python's default
trust, which ``SSL_CERT_FILE`` replaces: ``twinfleet up`` points it at
:func:`trust_bundle` (the system's CAs and the hub's), so every such client on the node
verifies the hub too.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

NATS_PASSWORD_FILE_ENV = "TWINFLEET_NATS_PASSWORD_FILE"
NATS_PASSWORD_ENV = "TWINFLEET_NATS_PASSWORD"
NATS_CA_FILE_ENV = "TWINFLEET_NATS_CA_FILE"


class SecretMissing(RuntimeError):
    """A secret this process needs is not configured on its node."""


class SecretFileUnsafe(RuntimeError):
    """A secret's file is readable by others than its owner, or owned by someone else."""


def private_text(path: Path) -> str:
    """The text of a secret's file, refused unless this user owns it and nobody else may
    read or write it (a secret others can read is no secret; one others can write could
    be replaced)."""
    info = path.stat()
    if info.st_uid != os.getuid():
        raise SecretFileUnsafe(
            f"{path} is owned by uid {info.st_uid}, not by this user (uid {os.getuid()}); "
            "a secret's file must be its user's own"
        )
    if info.st_mode & 0o077:
        raise SecretFileUnsafe(
            f"{path} has mode {info.st_mode & 0o777:o}: others may read or write it; "
            f"chmod 600 {path}"
        )
    return path.read_text().strip()


def read_secret(env: str, file_env: str) -> str:
    """A secret on this node: ``$env``, else the file named by ``$file_env``. A missing
    one is an error naming both settings."""
    given = os.environ.get(env)
    if given:
        return given
    path = os.environ.get(file_env)
    if not path:
        raise SecretMissing(f"no secret on this node: set {env} or {file_env}")
    return private_text(Path(path))


def without_password(url: str) -> str:
    """``url`` without its password (the user stays): what may travel and be printed.

    >>> without_password("nats://twinfleet:s3cret@127.0.0.1:4222")
    'nats://twinfleet@127.0.0.1:4222'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}@{parts.netloc.rsplit('@', 1)[1]}"
    return urlunsplit(parts._replace(netloc=netloc))


def nats_url_on_node(url: str) -> str:
    """``url`` with the NATS password read on this node when it names a user but no
    password (``$TWINFLEET_NATS_PASSWORD_FILE``); any other URL is returned as is.

    >>> nats_url_on_node("nats://127.0.0.1:4222")
    'nats://127.0.0.1:4222'
    """
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None or parts.password is not None:
        return url
    password = read_secret(NATS_PASSWORD_ENV, NATS_PASSWORD_FILE_ENV)
    host = parts.netloc.rsplit("@", 1)[1]
    netloc = f"{parts.username}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def tls_context(ca_file: Path | str | None = None, *, ca_pem: str | None = None) -> ssl.SSLContext:
    """A client context that trusts one CA only, ``ca_file`` or the PEM text ``ca_pem``
    (a gateway's credentials carry it), and checks the server's name."""
    if (ca_file is None) == (ca_pem is None):
        raise ValueError("a TLS context trusts one CA: give its file or its PEM text")
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=None if ca_file is None else str(ca_file),
        cadata=ca_pem,
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def nats_tls_on_node() -> ssl.SSLContext | None:
    """The ``tls=`` of ``nats.connect`` on this node: a context trusting the hub's CA
    (``$TWINFLEET_NATS_CA_FILE``), or None when the hub has no TLS configured."""
    path = os.environ.get(NATS_CA_FILE_ENV)
    return tls_context(path) if path else None


def nats_tls_options() -> dict[str, ssl.SSLContext]:
    """``**nats_tls_options()`` for ``nats.connect``: ``{"tls": context}`` when the hub
    has TLS on this node's configuration, else nothing (plain connections as before)."""
    context = nats_tls_on_node()
    return {} if context is None else {"tls": context}


def trust_bundle(ca_file: Path, dest: Path) -> Path:
    """``dest`` written with the system's CA certificates followed by ``ca_file``: what
    ``SSL_CERT_FILE`` names so Python's default contexts (and so ``nats.connect`` without
    ``tls=``) trust the hub as well as everything they trusted before."""
    system = ssl.get_default_verify_paths().openssl_cafile
    parts: list[str] = []
    if system and Path(system).is_file():
        parts.append(Path(system).read_text())
    parts.append(Path(ca_file).read_text())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text("\n".join(p.rstrip("\n") for p in parts) + "\n")
    os.replace(tmp, dest)
    return dest

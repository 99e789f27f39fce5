"""Connecting to the bus from a process Ray started, without the secret travelling.

Secrets reach the processes Ray starts through the node's environment, never as actor or
deployment arguments (which any client of the cluster can read): ``twinfleet up`` sets
``TWINFLEET_NATS_PASSWORD_FILE`` (and ``TWINFLEET_API_SECRET_FILE``, libpq's
``PGPASSFILE``) before it starts Ray, so its workers inherit them; on a cluster, set them
in the environment of ``ray start`` on every node, pointing at files readable by their
owner only. A NATS URL that travels names the user and no password; the process fills the
password in on its node (:func:`nats_url_on_node`).
"""

from __future__ import annotations

import os
from pathlib import Path

NATS_PASSWORD_FILE_ENV = "TWINFLEET_NATS_PASSWORD_FILE"
NATS_PASSWORD_ENV = "TWINFLEET_NATS_PASSWORD"


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

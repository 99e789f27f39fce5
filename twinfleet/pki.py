"""The hub's certificates: a small CA and the server certificate its TLS ports present.

``twinfleet pki init`` keeps everything under ``<data_dir>/pki/``:

* ``ca.pem``: the CA certificate (EC P-256, 10 years) that gateways and clients trust;
* ``ca.key``: its private key, mode 0600 (absent when a user's own CA issued the server
  certificate and only its certificate was given);
* ``server.pem`` / ``server.key``: the server certificate (2 years) and key (mode 0600)
  that nats-server's client and leaf-node ports (and HAProxy, for HTTPS) present; its
  subject alternative names are ``localhost``, ``127.0.0.1``, ``::1`` and the names given.

``init`` is idempotent: an existing CA is kept (and said so); an existing server
certificate is kept while it is signed by that CA, names every requested host and is
valid for another 30 days, else a new one is issued (with the names it had plus the new
ones). A user's own CA is used instead of a new one by giving its certificate and key
(the server certificate is then issued by it), or its certificate with a server
certificate and key it already issued (these are checked and copied, nothing is signed).

Nothing here starts a server: :func:`tls_files` tells the hub's configuration
(:func:`twinfleet.natsconf.hub_server`) whether TLS is on, which is when
``<data_dir>/pki/server.pem`` exists.

>>> names = default_hosts(["hub.example", "10.0.0.7", "localhost"])
>>> names
['localhost', '127.0.0.1', '::1', 'hub.example', '10.0.0.7']
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 730
RENEW_BEFORE_DAYS = 30
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


class PkiError(RuntimeError):
    """The PKI files are inconsistent, or a given file is not what it must be."""


@dataclass(frozen=True)
class TlsFiles:
    """The files a TLS listener and its clients need."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def pki_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "pki"


def pki_files(data_dir: Path) -> TlsFiles:
    """Where the files are (whether or not they exist)."""
    d = pki_dir(data_dir)
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")


def ca_key_file(data_dir: Path) -> Path:
    return pki_dir(data_dir) / "ca.key"


def tls_files(data_dir: Path) -> TlsFiles | None:
    """The hub's TLS files when TLS is configured (``server.pem`` exists), else None.
    A server certificate without its key or CA is an error, not plain text silently."""
    files = pki_files(data_dir)
    if not files.cert_file.exists():
        return None
    missing = [p for p in (files.key_file, files.ca_file) if not p.exists()]
    if missing:
        raise PkiError(
            f"{files.cert_file} exists but {', '.join(map(str, missing))} does not: "
            "run twinfleet pki init, or remove the pki directory to run without TLS"
        )
    return files


def default_hosts(extra: Iterable[str] = ()) -> list[str]:
    """The default names (loopback) followed by the ``extra`` ones, without repeats."""
    names: list[str] = []
    for name in [*DEFAULT_HOSTS, *extra]:
        name = name.strip()
        if name and name not in names:
            names.append(name)
    return names


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def san_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for, as text."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*dns, *ips]


def _covers(cert: x509.Certificate, hosts: Sequence[str]) -> bool:
    have = {_normal(n) for n in san_names(cert)}
    return all(_normal(h) in have for h in hosts)


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(
    common_name: str = "twinfleet CA",
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new CA: an EC P-256 key and its self-signed certificate (may sign end
    certificates only: path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey | object,
    ca_cert: x509.Certificate,
    hosts: Sequence[str],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new EC P-256 server key and its certificate, signed by the CA, valid for
    ``hosts`` (DNS names or IP addresses) as a TLS server and client."""
    if not hosts:
        raise PkiError("a server certificate needs at least one host name")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return key, cert


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries a valid signature of ``ca_cert``'s key and names it as
    its issuer."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# -- files -----------------------------------------------------------------------------


def write_private(path: Path, data: bytes) -> None:
    """``data`` into ``path``, readable by its owner only from the moment it exists
    (written beside and renamed over any older file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _key_pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: not a PEM certificate ({exc})") from None


def load_key(path: Path) -> object:
    try:
        return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{path}: not an unencrypted PEM private key ({exc})") from None


def _same_public_key(key: object, cert: x509.Certificate) -> bool:
    def spki(public: object) -> bytes:
        return public.public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    return spki(key.public_key()) == spki(cert.public_key())  # type: ignore[attr-defined]


def init(
    data_dir: Path,
    hosts: Sequence[str] = (),
    *,
    own_ca_cert: Path | None = None,
    own_ca_key: Path | None = None,
    own_cert: Path | None = None,
    own_key: Path | None = None,
) -> list[str]:
    """Make (or keep) the CA and the server certificate under ``<data_dir>/pki``;
    returns what was done, a line each.

    ``own_ca_cert`` with ``own_ca_key``: the user's CA signs the server certificate
    (both are copied in; the key mode 0600). ``own_ca_cert`` with ``own_cert`` and
    ``own_key``: the user's server certificate, issued by that CA, is used as is."""
    if (own_cert is None) != (own_key is None):
        raise PkiError("a server certificate and its key are given together")
    if own_cert is not None and own_ca_cert is None:
        raise PkiError("a given server certificate needs the certificate of the CA that issued it")
    if own_ca_key is not None and own_ca_cert is None:
        raise PkiError("a CA key needs its certificate")
    files = pki_files(data_dir)
    ca_key_path = ca_key_file(data_dir)
    pki_dir(data_dir).mkdir(parents=True, exist_ok=True)
    pki_dir(data_dir).chmod(0o700)
    names = default_hosts(hosts)
    done: list[str] = []

    # -- the CA ---------------------------------------------------------------------------
    if files.ca_file.exists():
        ca_cert = load_cert(files.ca_file)
        if own_ca_cert is not None and load_cert(own_ca_cert) != ca_cert:
            raise PkiError(
                f"{files.ca_file} is another CA: remove {pki_dir(data_dir)} to use the given one"
            )
        done.append(f"kept the existing CA {files.ca_file}")
    elif own_ca_cert is not None:
        ca_cert = load_cert(own_ca_cert)
        if own_ca_key is not None:
            if not _same_public_key(load_key(own_ca_key), ca_cert):
                raise PkiError(f"{own_ca_key} is not the key of {own_ca_cert}")
            write_private(ca_key_path, Path(own_ca_key).read_bytes())
        write_public(files.ca_file, _cert_pem(ca_cert))
        done.append(f"using your CA {own_ca_cert} (copied to {files.ca_file})")
    else:
        key, ca_cert = make_ca()
        write_private(ca_key_path, _key_pem(key))
        write_public(files.ca_file, _cert_pem(ca_cert))
        done.append(f"made a new CA: {files.ca_file} (key {ca_key_path}, mode 0600)")

    # -- the server certificate -----------------------------------------------------------
    if own_cert is not None and own_key is not None:
        cert = load_cert(own_cert)
        if not issued_by(cert, ca_cert):
            raise PkiError(f"{own_cert} is not issued by the CA {files.ca_file}")
        if not _same_public_key(load_key(own_key), cert):
            raise PkiError(f"{own_key} is not the key of {own_cert}")
        write_public(files.cert_file, Path(own_cert).read_bytes())
        write_private(files.key_file, Path(own_key).read_bytes())
        done.append(
            f"using your server certificate (copied to {files.cert_file}); "
            f"it names {', '.join(san_names(cert)) or 'no host'}"
        )
        return done
    if files.cert_file.exists() and files.key_file.exists():
        cert = load_cert(files.cert_file)
        fresh = cert.not_valid_after_utc - _now() > dt.timedelta(days=RENEW_BEFORE_DAYS)
        if issued_by(cert, ca_cert) and fresh and _covers(cert, names):
            done.append(
                f"kept the existing server certificate {files.cert_file} "
                f"({', '.join(san_names(cert))})"
            )
            return done
        if issued_by(cert, ca_cert):
            names = default_hosts([*names, *san_names(cert)])
    if not ca_key_path.exists():
        raise PkiError(
            f"no CA key ({ca_key_path}) to issue a server certificate with: give your server "
            "certificate and key (--cert, --key), or the CA's key (--ca-key)"
        )
    key, cert = make_server_cert(load_key(ca_key_path), ca_cert, names)
    write_private(files.key_file, _key_pem(key))
    write_public(files.cert_file, _cert_pem(cert))
    done.append(
        f"issued {files.cert_file} for {', '.join(names)} (key {files.key_file}, mode 0600)"
    )
    return done


def hub_ca_pem(data_dir: Path) -> str | None:
    """The hub's CA certificate (PEM) when the hub has TLS, for gateways' credentials."""
    return None if tls_files(data_dir) is None else pki_files(data_dir).ca_file.read_text()


def init_hub(data_dir: Path, hosts: Sequence[str] = (), **own: Path | None) -> list[str]:
    """:func:`init`, then every registered gateway's credentials file carries the hub's
    CA (its leaf node then reaches the hub over TLS only)."""
    from twinfleet.natsconf import gateways_dir, load_gateways

    done = init(data_dir, hosts, **own)
    ca = hub_ca_pem(data_dir)
    for creds in load_gateways(gateways_dir(data_dir)):
        if creds.hub_ca != ca:
            path = dataclasses.replace(creds, hub_ca=ca).save(gateways_dir(data_dir))
            done.append(f"gateway {creds.gateway_id}: {path} now carries the CA; copy it again")
    done.append(
        "twinfleet up serves the NATS client and leaf-node ports over TLS from its next start"
    )
    return done

"""What the local broker's secured listener needs: a certificate authority and a server certificate
(TLS), and SCRAM users with passwords, all made locally and kept under the broker's data directory.

The users are adaptloop's principals: ``admin`` (the broker itself and whoever administers it),
``worker`` (the worker's roles), ``service`` (services that send events and are served),
``operator`` (rollbacks, audits). :func:`client_properties` is the ``kafka`` setting that logs in as
one of them.

The KRaft controller listener takes TLS with a client certificate only, and the only certificate it
accepts is the broker's own (:attr:`SecureFiles.controller`, signed by a CA made for it alone whose
key is not kept): no client can reach the controller (``--bootstrap-controller``) without that file.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USERS: tuple[str, ...] = ("admin", "worker", "service", "operator")
MECHANISM = "SCRAM-SHA-512"
VALID_DAYS = 3650
CONTROLLER_CN = "adaptloop-controller"
CONTROLLER_PRINCIPAL = f"User:CN={CONTROLLER_CN}"
"""Who the broker is on its own controller listener (its certificate's subject, Kafka's default SSL
principal)."""


@dataclass(frozen=True)
class SecureFiles:
    """Where the secured listener's material lives (under ``<data dir>/security``)."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def server(self) -> Path:
        """The broker's private key (PKCS#8) and its certificate chain, in one PEM file (Kafka's PEM
        keystore)."""
        return self.root / "server.pem"

    def password_file(self, user: str) -> Path:
        return self.root / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    @property
    def controller(self) -> Path:
        """The controller listener's private key and certificate (server and client: the broker
        presents it to its own controller), in one PEM file."""
        return self.root / "controller.pem"

    @property
    def controller_ca(self) -> Path:
        """The certificate of the CA that signed :attr:`controller` alone (its key was thrown away):
        the only certificate the controller listener accepts is the broker's own."""
        return self.root / "controller-ca.pem"

    def exists(self) -> bool:
        return (
            self.ca.exists()
            and self.server.exists()
            and all(self.password_file(u).exists() for u in USERS)
        )

    def create(self, host: str) -> None:
        """Make the CA, the server certificate (for ``host``, ``localhost`` and 127.0.0.1), the
        controller's certificate and a password per user, readable by this user only."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _make_pair(
            self.ca, self.server, "adaptloop local CA", "adaptloop local broker", host, client=False
        )
        self.create_controller(host)
        for user in USERS:
            _write_private(self.password_file(user), secrets.token_urlsafe(24).encode())

    def create_controller(self, host: str) -> None:
        """Make the controller listener's certificate, under a CA of its own whose key is not kept
        (a home made secure before the controller listener was authenticated gets it at its next
        start)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _make_pair(
            self.controller_ca,
            self.controller,
            "adaptloop controller CA",
            CONTROLLER_CN,
            host,
            client=True,
        )


def _make_pair(
    ca_path: Path, leaf_path: Path, ca_cn: str, leaf_cn: str, host: str, *, client: bool
) -> None:
    """A new CA (its certificate written to ``ca_path``, its key forgotten) and a certificate it
    signs for ``host``, ``localhost`` and 127.0.0.1 (with its key and chain, to ``leaf_path``);
    ``client``: the certificate may also authenticate its holder as a client."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_cn)])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    usages = [
        x509.ExtendedKeyUsageOID.SERVER_AUTH,
        *([x509.ExtendedKeyUsageOID.CLIENT_AUTH] if client else []),
    ]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf_cn)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write_private(ca_path, ca.public_bytes(pem))
    _write_private(
        leaf_path,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + leaf.public_bytes(pem)
        + ca.public_bytes(pem),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)


def client_properties(files: SecureFiles, user: str) -> dict[str, str]:
    """The ``kafka`` setting that connects to the secured listener as ``user`` (its password read
    from its file).

    >>> sorted(client_properties(SecureFiles(Path("/k/security")), "service"))
    ['sasl.mechanism', 'sasl.password', 'sasl.username', 'security.protocol', 'ssl.ca.location']
    """
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": MECHANISM,
        "sasl.username": user,
        "sasl.password": f"file:{files.password_file(user)}",
        "ssl.ca.location": str(files.ca),
    }

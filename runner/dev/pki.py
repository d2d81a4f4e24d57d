"""A throwaway PKI for the local environment: one CA, serving certificates for loopback, and
client certificates whose subject carries the Kubernetes user (CN) and groups (O).

Keys are ECDSA P-256: generating them is instant (RSA-2048 is not, on a 2-core CI box), and
kube-apiserver, etcd, docker-registry and Python's ssl all accept them, including ES256
service-account tokens.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
VALIDITY = dt.timedelta(days=365)
# Clock skew between this host and a verifier (e.g. a container) must not make a fresh
# certificate "not yet valid".
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write `<name>.crt` and `<name>.key` (mode 0600) into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / f"{name}.crt"
        key_path = directory / f"{name}.key"
        cert_path.write_bytes(self.cert_pem)
        write_private(key_path, self.key_pem)
        return cert_path, key_path

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True)
class CertificateAuthority:
    keys: KeyPair
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.keys.cert_pem


def write_private(path: Path, data: bytes) -> None:
    """Write a secret so that it is never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _validity(now: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    start = (now or dt.datetime.now(dt.UTC)) - BACKDATE
    return start, start + VALIDITY


def new_ca(
    common_name: str = "lading dev CA", now: dt.datetime | None = None
) -> CertificateAuthority:
    key = _new_key()
    not_before, not_after = _validity(now)
    name = _name(common_name)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return CertificateAuthority(KeyPair(pem, _key_pem(key)), key, cert)


def load_ca(cert_path: Path, key_path: Path) -> CertificateAuthority:
    cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an ECDSA key")
    return CertificateAuthority(KeyPair(cert_pem, key_pem), key,
                                x509.load_pem_x509_certificate(cert_pem))


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(
    ca: CertificateAuthority,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    hosts: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    now: dt.datetime | None = None,
) -> KeyPair:
    """A leaf certificate signed by `ca`.

    `hosts` become subjectAltNames (IPs as IP entries): modern TLS clients ignore the CN.
    For Kubernetes client certificates the CN is the user name and each O a group.
    """
    if not (server or client):
        raise ValueError("a leaf certificate needs server and/or client usage")
    key = _new_key()
    not_before, not_after = _validity(now)
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, key_cert_sign=False,
                crl_sign=False, content_commitment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca.private_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def serving_pair(ca: CertificateAuthority, common_name: str) -> KeyPair:
    """A server certificate valid for the loopback names, as every dev component binds there."""
    return issue(ca, common_name, hosts=LOOPBACK_HOSTS, server=True)


def signing_key_pair() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) for signing service-account tokens."""
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _key_pem(key), public

"""The dev PKI issues certificates that TLS clients and Kubernetes accept for loopback servers."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runner.dev import pki


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.new_ca("test CA")


def test_serving_certificate_names_every_loopback_host(ca: pki.CertificateAuthority) -> None:
    cert = pki.serving_pair(ca, "server").certificate()

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
    }
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_certificate_carries_the_kubernetes_user_and_groups(
    ca: pki.CertificateAuthority,
) -> None:
    cert = pki.issue(ca, "lading-admin", organizations=("system:masters",), client=True)
    subject = cert.certificate().subject

    assert [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "lading-admin"
    ]
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters"
    ]


def test_leaf_certificates_verify_against_the_ca(
    ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    ca_file, _ = ca.keys.write(tmp_path, "ca")
    cert_file, key_file = pki.serving_pair(ca, "server").write(tmp_path, "server")
    # Loading into an SSLContext exercises the same checks a TLS handshake does on the chain's
    # ends: the key matches the certificate and the CA parses as a trust anchor.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(ca_file))
    assert client.get_ca_certs()[0]["subject"] == ((("commonName", "test CA"),),)

    leaf = x509.load_pem_x509_certificate(cert_file.read_bytes())
    leaf.verify_directly_issued_by(ca.certificate)


def test_private_keys_are_written_readable_by_the_owner_only(
    ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    _, key_file = pki.issue(ca, "someone", client=True).write(tmp_path, "someone")

    assert key_file.stat().st_mode & 0o777 == 0o600


def test_a_written_ca_loads_back_and_keeps_signing(
    ca: pki.CertificateAuthority, tmp_path: Path
) -> None:
    cert_file, key_file = ca.keys.write(tmp_path, "ca")

    loaded = pki.load_ca(cert_file, key_file)
    leaf = pki.issue(loaded, "late", client=True).certificate()

    leaf.verify_directly_issued_by(ca.certificate)


def test_a_leaf_certificate_needs_a_usage(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="usage"):
        pki.issue(ca, "nothing")


def test_service_account_signing_keys_are_a_matching_pair() -> None:
    from cryptography.hazmat.primitives import serialization

    private_pem, public_pem = pki.signing_key_pair()
    private = serialization.load_pem_private_key(private_pem, password=None)
    public = serialization.load_pem_public_key(public_pem)

    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()

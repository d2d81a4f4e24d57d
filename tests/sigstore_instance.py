"""A private Sigstore instance in memory, for offline tests: a Fulcio-like CA, a CT log and a
Rekor-like log, each a fresh key, and the trusted_root.json naming them.

`sign()` produces a complete v0.3 bundle — a code-signing certificate with an embedded SCT,
a hashedrekord log entry with a signed entry timestamp and an inclusion proof under a signed
checkpoint — that sigstore-python's real Verifier accepts against `trusted_root`. Nothing in
the verifier is replaced: this is the "trusted_root.json of a private instance" path, and it
lets tests sign lading manifests, which the recorded public bundles cannot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
LOG_ORIGIN = "rekor.lading.test"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    return b"\x0c" + _der_length(len(raw)) + raw


def _der_octets(raw: bytes) -> bytes:
    return b"\x04" + _der_length(len(raw)) + raw


class PrivateInstance:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.log_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lading test CA")])
        self.ca_name = name
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(1)
            .not_valid_before(self.now - timedelta(days=1))
            .not_valid_after(self.now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), False
            )
            .sign(self.ca_key, hashes.SHA256())
        )

    def _log(self, key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "logId": {"keyId": _b64(hashlib.sha256(_spki(key)).digest())},
            "publicKey": {
                "rawBytes": _b64(_spki(key)),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2024-01-01T00:00:00Z"},
            },
        }

    def trusted_root(self) -> dict[str, Any]:
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [self._log(self.log_key, "https://rekor.lading.test")],
            "ctlogs": [self._log(self.ct_key, "https://ct.lading.test")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "lading", "commonName": "lading test CA"},
                    "uri": "https://fulcio.lading.test",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": _b64(self.ca.public_bytes(serialization.Encoding.DER))}
                        ]
                    },
                    "validFor": {"start": "2024-01-01T00:00:00Z"},
                }
            ],
        }

    def trust_config(self, services: str) -> dict[str, Any]:
        """A client trust config whose signing services all live at `services` (a URL)."""

        def service(url: str) -> list[dict[str, Any]]:
            return [{"url": url, "majorApiVersion": 1, "operator": "lading.test",
                     "validFor": {"start": "2024-01-01T00:00:00Z"}}]

        return {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": self.trusted_root(),
            "signingConfig": {
                "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                "caUrls": service(services),
                "oidcUrls": service(services),
                "rekorTlogUrls": service(services),
                "tsaUrls": [],
                "rekorTlogConfig": {"selector": "ANY"},
                "tsaConfig": {"selector": "ANY"},
            },
        }

    def _certificate(
        self, key: ec.EllipticCurvePrivateKey, identity: str, issuer: str
    ) -> x509.Certificate:
        san: x509.GeneralName = (
            x509.UniformResourceIdentifier(identity) if "://" in identity
            else x509.RFC822Name(identity)
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - timedelta(minutes=1))
            .not_valid_after(self.now + timedelta(minutes=10))
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                False,
            )
            .add_extension(x509.UnrecognizedExtension(ISSUER_V1, issuer.encode()), False)
            .add_extension(x509.UnrecognizedExtension(ISSUER_V2, _der_utf8(issuer)), False)
        )
        # RFC 6962 §3.2: the CT log signs the precertificate's TBS without the SCT extension.
        tbs = builder.sign(self.ca_key, hashes.SHA256()).tbs_certificate_bytes
        millis = int(self.now.timestamp() * 1000)
        signed = (
            struct.pack("!BBQH", 0, 0, millis, 1)
            + hashlib.sha256(_spki(self.ca_key)).digest()
            + len(tbs).to_bytes(3, "big") + tbs
            + b"\x00\x00"
        )
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (
            b"\x00" + hashlib.sha256(_spki(self.ct_key)).digest()
            + struct.pack("!QH", millis, 0)
            + struct.pack("!BBH", 4, 3, len(signature)) + signature
        )
        sct_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        return builder.add_extension(
            x509.UnrecognizedExtension(
                ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, _der_octets(sct_list)
            ),
            False,
        ).sign(self.ca_key, hashes.SHA256())

    def sign(self, message: bytes, identity: str, issuer: str) -> bytes:
        """A bundle signing `message` (its SHA-256 is the bundle's message digest)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._certificate(key, identity, issuer)
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        digest = hashlib.sha256(message)
        body = rfc8785.dumps({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": digest.hexdigest()}},
                "signature": {"content": _b64(signature), "publicKey": {"content": _b64(pem)}},
            },
        })
        log_id = hashlib.sha256(_spki(self.log_key)).digest()
        leaf = hashlib.sha256(b"\x00" + body).digest()
        note = f"{LOG_ORIGIN}\n1\n{_b64(leaf)}\n"
        note_signature = self.log_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        integrated = int(self.now.timestamp())
        promise = rfc8785.dumps({
            "body": _b64(body),
            "integratedTime": integrated,
            "logID": log_id.hex(),
            "logIndex": 0,
        })
        bundle = {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [{
                    "logIndex": "0",
                    "logId": {"keyId": _b64(log_id)},
                    "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                    "integratedTime": str(integrated),
                    "canonicalizedBody": _b64(body),
                    "inclusionPromise": {
                        "signedEntryTimestamp": _b64(
                            self.log_key.sign(promise, ec.ECDSA(hashes.SHA256()))
                        )
                    },
                    "inclusionProof": {
                        "logIndex": "0",
                        "rootHash": _b64(leaf),
                        "treeSize": "1",
                        "hashes": [],
                        "checkpoint": {
                            "envelope": note + f"\n— {LOG_ORIGIN} "
                            f"{_b64(log_id[:4] + note_signature)}\n"
                        },
                    },
                }],
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest.digest())},
                "signature": _b64(signature),
            },
        }
        return json.dumps(bundle).encode()

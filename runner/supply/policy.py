"""A SignaturePolicy as sigstore sees it: a certificate check (identity and issuer, exact or
regexp) and the trusted root to verify against, loaded without touching the network."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from sigstore.errors import VerificationError
from sigstore.models import ClientTrustConfig, TrustedRoot

from plans.supply import SignaturePolicy
from runner.common.errors import InputError

# Fulcio's certificate extensions (https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md)
_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw string
_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String
_OTHERNAME_SAN = ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
_TRUST_CONFIG = "application/vnd.dev.sigstore.clienttrustconfig"


@dataclass(frozen=True)
class CertificateIdentity:
    """What a Fulcio certificate says about its signer."""

    sans: tuple[str, ...]
    issuer: str | None


def certificate_identity(cert: x509.Certificate) -> CertificateIdentity:
    sans: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans += san.get_values_for_type(x509.RFC822Name)
        sans += san.get_values_for_type(x509.UniformResourceIdentifier)
        sans += [
            other.value.decode(errors="replace")
            for other in san.get_values_for_type(x509.OtherName)
            if other.type_id == _OTHERNAME_SAN
        ]
    except x509.ExtensionNotFound:
        pass
    return CertificateIdentity(tuple(sans), _issuer(cert))


def _issuer(cert: x509.Certificate) -> str | None:
    for oid, decode in ((_ISSUER_V2, _der_utf8), (_ISSUER_V1, bytes.decode)):
        try:
            ext = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        if isinstance(ext, x509.UnrecognizedExtension):
            try:
                return decode(ext.value)
            except (UnicodeDecodeError, ValueError):
                return None
    return None


def _der_utf8(raw: bytes) -> str:
    if len(raw) < 2 or raw[0] != 0x0C:
        raise ValueError("not a DER UTF8String")
    length, offset = raw[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(raw[2 : 2 + count], "big"), 2 + count
    return raw[offset : offset + length].decode()


class IdentityPolicy:
    """sigstore's VerificationPolicy protocol for a SignaturePolicy: raises VerificationError
    naming what the certificate holds, so a refusal says who did sign."""

    def __init__(self, policy: SignaturePolicy):
        self.policy = policy

    def verify(self, cert: x509.Certificate) -> None:
        found = certificate_identity(cert)
        p = self.policy
        if not _matches(found.issuer, p.issuer, p.issuer_regexp):
            want = p.issuer or f"/{p.issuer_regexp}/"
            raise VerificationError(
                f"certificate issuer {found.issuer!r} does not match {want}"
            )
        if not any(_matches(san, p.identity, p.identity_regexp) for san in found.sans):
            want = p.identity or f"/{p.identity_regexp}/"
            raise VerificationError(
                f"certificate identity {', '.join(found.sans) or '(none)'} does not match {want}"
            )


def _matches(value: str | None, exact: str | None, pattern: str | None) -> bool:
    if value is None:
        return False
    if exact is not None:
        return value == exact
    return pattern is not None and re.fullmatch(pattern, value) is not None


def load_trusted_root(path: str | None) -> TrustedRoot:
    """A trusted_root.json (or a client trust config holding one); by default the public-good
    root sigstore-python ships with, from its local TUF cache, never refreshed online."""
    if path is None:
        # The offline TUF loader warns on every call that it will not refresh; that is the point.
        logging.getLogger("sigstore._internal.tuf").setLevel(logging.ERROR)
        try:
            return ClientTrustConfig.production(offline=True).trusted_root
        except Exception as e:  # sigstore wraps TUF and file errors in several types
            raise InputError(
                f"cannot load the embedded Sigstore trusted root: {type(e).__name__}: {e}",
                hint="pass a trusted_root.json with --trusted-root",
            ) from None
    try:
        text = Path(path).read_text()
        media_type = str(json.loads(text).get("mediaType", ""))
        if media_type.startswith(_TRUST_CONFIG):
            return ClientTrustConfig.from_json(text).trusted_root
        return TrustedRoot.from_file(path)
    except OSError as e:
        raise InputError(f"cannot read trusted root {path}: {e.strerror}") from None
    except Exception as e:  # JSON and protobuf-model errors of several kinds
        raise InputError(
            f"{path} is not a Sigstore trusted root: {type(e).__name__}: {e}",
            hint="give a trusted_root.json (mediaType "
            "application/vnd.dev.sigstore.trustedroot+json;version=0.1)",
        ) from None

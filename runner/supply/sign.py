"""Keyless signing with sigstore-python: an OIDC identity token (given, or the CI system's
ambient credential) buys a short-lived Fulcio certificate; the manifest bytes are signed, so
the bundle's message digest is the artifact digest; the signing is logged in Rekor; and the
bundle is attached to the artifact as an OCI referrer.

Signing needs Fulcio and Rekor (and, for the public-good instance, a TUF refresh): without a
network it fails with a RemoteError (exit 3). The identity token is a secret: it never
appears in a message, a log line or a result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import requests
from pydantic import SecretStr
from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle, ClientTrustConfig
from sigstore.oidc import IdentityError, IdentityToken, detect_credential
from sigstore.sign import SigningContext

from plans.supply import Signature, SignResult
from runner.common.digest import sha256_digest
from runner.common.errors import InputError, LadingError, RemoteError
from runner.common.output import silent
from runner.common.reference import parse_ref
from runner.common.store import RegistryOptions, open_store
from runner.supply.policy import certificate_identity
from runner.supply.referrers import attach, bundle_manifest
from runner.supply.verify import pinned_manifest


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def identity_token(explicit: SecretStr | None) -> IdentityToken:
    """The token to sign with: the explicit one, else the CI system's ambient credential."""
    raw = explicit.get_secret_value() if explicit else None
    if not raw:
        try:
            raw = detect_credential()
        except IdentityError as e:
            raise RemoteError(
                f"the CI system's OIDC credential could not be obtained: {e}",
                hint="on GitHub Actions grant `permissions: id-token: write`",
            ) from None
    if not raw:
        raise InputError(
            "no OIDC identity token for keyless signing",
            hint="run in a CI system sigstore detects (GitHub Actions, GitLab, Buildkite, "
            "Google Cloud…), or pass --identity-token / SIGSTORE_ID_TOKEN",
        )
    try:
        return IdentityToken(raw)
    except IdentityError as e:
        raise InputError(
            f"the identity token is unusable: {_scrub(str(e), raw)}",
            hint="a Sigstore token is a JWT with audience 'sigstore' that has not expired",
        ) from None


def trust_config(path: Path | None) -> ClientTrustConfig:
    if path is not None:
        try:
            return ClientTrustConfig.from_json(path.read_text())
        except OSError as e:
            raise InputError(f"cannot read trust config {path}: {e.strerror}") from None
        except Exception as e:  # JSON and protobuf-model errors of several kinds
            raise InputError(
                f"{path} is not a Sigstore client trust config: {type(e).__name__}",
                hint="give a JSON document with mediaType "
                "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            ) from None
    try:
        return ClientTrustConfig.production()
    except Exception as e:  # TUF refresh failures come wrapped in several types
        raise RemoteError(
            f"cannot refresh the Sigstore public-good trust root: {_cause(e)}",
            hint="signing needs network access to Sigstore (TUF, Fulcio, Rekor); for a "
            "private instance pass --trust-config",
        ) from None


def _cause(error: BaseException) -> str:
    # sigstore wraps the requests error; the innermost message names host and reason.
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error)
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def sign_bundle(manifest: bytes, token: IdentityToken, config: ClientTrustConfig) -> bytes:
    """A Sigstore bundle over `manifest` (its message digest is the manifest digest)."""
    secret = str(token._raw_token)
    try:
        context = SigningContext.from_trust_config(config)
        with context.signer(token, cache=False) as signer:
            bundle = signer.sign_artifact(manifest)
    except (SigstoreError, requests.RequestException) as e:
        raise RemoteError(
            f"keyless signing failed: {_scrub(_cause(e), secret)}",
            hint="signing needs network access to the Sigstore instance (Fulcio, Rekor)",
        ) from None
    except Exception as e:  # sigstore raises a few plain exceptions (expired identity…)
        if isinstance(e, LadingError):
            raise
        raise RemoteError(f"keyless signing failed: {_scrub(_cause(e), secret)}") from None
    return bundle.to_json().encode()


def sign(
    ref_text: str,
    *,
    token: SecretStr | None = None,
    trust_config_path: Path | None = None,
    options: RegistryOptions | None = None,
    progress: Callable[[str], None] = silent,
) -> SignResult:
    """`lading sign`: sign the artifact's manifest digest and attach the bundle as a referrer."""
    ref = parse_ref(ref_text)
    store = open_store(ref, options)
    try:
        raw, subject = pinned_manifest(store, ref)
        if not ref.digest:
            progress(f"resolved {ref} to {subject.digest}; signing that digest")
        bundle = sign_bundle(raw, identity_token(token), trust_config(trust_config_path))
        manifest, blobs = bundle_manifest(bundle, subject)
        attached = attach(store, manifest, blobs)
    finally:
        store.close()
    parsed = Bundle.from_json(bundle)
    who = certificate_identity(parsed.signing_certificate)
    identity = next(iter(who.sans), "")
    progress(f"signed {subject.digest} as {identity}; signature attached ({attached})")
    return SignResult(
        digest=subject.digest,
        ref=ref.with_tag(None).with_digest(subject.digest).pinned(),
        signature=Signature(
            referrer=sha256_digest(manifest),
            identity=identity,
            issuer=who.issuer or "",
            log_index=parsed.log_entry._inner.log_index,
        ),
        attached=attached,
    )

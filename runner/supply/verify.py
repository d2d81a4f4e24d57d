"""Offline signature verification: find the Sigstore bundles among an artifact's referrers,
check each signs exactly this manifest digest, and verify it against a trusted root and the
identity policy. No network: the bundle carries the certificate, the transparency-log entry
and its inclusion proof; the trusted root carries the keys."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier
from sigstore_models.common.v1 import HashAlgorithm

from plans.supply import Signature, SignaturePolicy, VerifyResult
from runner.common.digest import verify as verify_digest
from runner.common.errors import InputError, OperationFailed
from runner.common.oci import Descriptor
from runner.common.output import silent
from runner.common.reference import ArtifactRef, parse_ref
from runner.common.store import RegistryOptions, Store, fetch_blob, fetch_manifest, open_store
from runner.supply.policy import IdentityPolicy, certificate_identity, load_trusted_root
from runner.supply.referrers import MAX_BUNDLE_BYTES, bundle_layer, bundle_referrers


class SignatureRefused(OperationFailed):
    """The artifact has no signature that satisfies the policy."""


def _policy_hint(policy: SignaturePolicy) -> str:
    who = policy.identity or f"/{policy.identity_regexp}/"
    by = policy.issuer or f"/{policy.issuer_regexp}/"
    return f"the policy wants a signature by {who} from {by}; sign with `lading sign`"


def signed_digest(bundle: bytes) -> str:
    """The message digest a (message-signature) bundle signs, as `sha256:<hex>`."""
    try:
        document = json.loads(bundle)
        digest = document["messageSignature"]["messageDigest"]
        if digest.get("algorithm") != "SHA2_256":
            raise ValueError(f"digest algorithm {digest.get('algorithm')!r}")
        return "sha256:" + base64.b64decode(digest["digest"], validate=True).hex()
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a message-signature bundle with a SHA-256 digest ({e})") from None


def verify_bundle(
    bundle: bytes, digest: str, policy: SignaturePolicy, root: TrustedRoot
) -> tuple[str, str, int | None, int | None]:
    """Verify that `bundle` signs `digest` under `policy`; return (identity, issuer, log index,
    integrated time). Raises ValueError with the reason otherwise."""
    signed = signed_digest(bundle)
    if signed != digest:
        raise ValueError(f"the bundle signs {signed}, not {digest}")
    try:
        parsed = Bundle.from_json(bundle)
    except Exception as e:  # InvalidBundle, and pydantic/protobuf errors for worse input
        raise ValueError(f"malformed Sigstore bundle: {type(e).__name__}: {e}") from None
    prehashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest[7:]))
    try:
        Verifier(trusted_root=root).verify_artifact(prehashed, parsed, IdentityPolicy(policy))
    except SigstoreError as e:
        raise ValueError(str(e)) from None
    who = certificate_identity(parsed.signing_certificate)
    entry = parsed.log_entry._inner
    return (
        next(iter(who.sans), ""),
        who.issuer or "",
        int(entry.log_index) if entry.log_index is not None else None,
        int(entry.integrated_time) if entry.integrated_time else None,
    )


def check_signature(
    store: Store,
    subject: Descriptor,
    policy: SignaturePolicy,
    root: TrustedRoot | None = None,
    progress: Callable[[str], None] = silent,
) -> Signature:
    """The first signature of `subject` that verifies under `policy`; SignatureRefused (exit 1)
    listing why each candidate failed when none does."""
    root = root or load_trusted_root(policy.trusted_root)
    candidates = bundle_referrers(store, subject.digest)
    if not candidates:
        raise SignatureRefused(
            f"{subject.digest} has no Sigstore signature", hint=_policy_hint(policy)
        )
    reasons = []
    for descriptor in candidates:
        referrer = fetch_manifest(store, descriptor)
        if referrer.subject is None or referrer.subject.digest != subject.digest:
            reasons.append(f"{descriptor.digest}: its subject is not {subject.digest}")
            continue
        bundle = fetch_blob(store, bundle_layer(referrer), MAX_BUNDLE_BYTES)
        try:
            identity, issuer, log_index, integrated = verify_bundle(
                bundle, subject.digest, policy, root
            )
        except ValueError as e:
            reasons.append(f"{descriptor.digest}: {e}")
            continue
        progress(f"signature {descriptor.digest[:19]} by {identity} ({issuer}) verified")
        return Signature(
            referrer=descriptor.digest,
            identity=identity,
            issuer=issuer,
            log_index=log_index,
            integrated_time=integrated,
        )
    raise SignatureRefused(
        f"no signature of {subject.digest} satisfies the policy:\n    " + "\n    ".join(reasons),
        hint=_policy_hint(policy),
    )


def verify(
    ref_text: str,
    policy: SignaturePolicy,
    options: RegistryOptions | None = None,
    progress: Callable[[str], None] = silent,
) -> VerifyResult:
    """`lading verify`: resolve the reference once, then verify by digest."""
    ref = parse_ref(ref_text)
    store = open_store(ref, options)
    try:
        _, manifest = pinned_manifest(store, ref)
        signature = check_signature(store, manifest, policy, progress=progress)
    finally:
        store.close()
    return VerifyResult(
        digest=manifest.digest,
        ref=ref.with_tag(None).with_digest(manifest.digest).pinned(),
        verified=True,
        signature=signature,
    )


def read_manifest(store: Store, reference: str) -> tuple[bytes, Descriptor]:
    """Resolve a tag or digest and read the manifest it names, hashed and checked: any
    manifest, not only lading artifacts (a signature binds whatever the digest names)."""
    descriptor = store.resolve(reference)
    raw, media_type = store.fetch_manifest_raw(descriptor.digest)
    verify_digest(raw, descriptor.digest, None, "manifest")
    return raw, Descriptor(media_type or descriptor.media_type, descriptor.digest, len(raw))


def pinned_manifest(store: Store, ref: ArtifactRef) -> tuple[bytes, Descriptor]:
    """`read_manifest` for a reference, which must name a tag or a digest (a digest wins)."""
    target = ref.digest or ref.tag
    if not target:
        raise InputError(f"{ref} names neither a tag nor a digest")
    raw, descriptor = read_manifest(store, target)
    if ref.digest and descriptor.digest != ref.digest:
        raise InputError(f"{ref} resolved to {descriptor.digest}, not the digest it names")
    return raw, descriptor

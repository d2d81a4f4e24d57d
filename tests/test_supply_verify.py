"""Signature verification offline, signing without a network, and the policy contract.

Real bundles (tests/data/sigstore, recorded from Sigstore's staging and public-good instances)
pin that lading verifies what Sigstore really issues; bundles from the in-memory private
instance (tests/sigstore_instance.py) sign real lading manifests. No servers: layouts only.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from pathlib import Path

import pytest

from plans.install import InstallPlan
from plans.supply import SignaturePolicy
from runner.common.digest import sha256_digest
from runner.common.errors import InputError
from runner.common.layout import LayoutStore
from runner.common.oci import MANIFEST, Descriptor
from runner.supply.policy import load_trusted_root
from runner.supply.referrers import BUNDLE, attach, bundle_manifest
from runner.supply.verify import SignatureRefused, check_signature, verify, verify_bundle
from tests.artifacts import config_map, publish
from tests.clirun import lading
from tests.sigstore_instance import PrivateInstance

DATA = Path(__file__).parent / "data" / "sigstore"
STAGING_ROOT = DATA / "staging_trusted_root.json"
STAGING_INPUT = (DATA / "bundle_v3_alt.txt").read_bytes()
STAGING_BUNDLE = (DATA / "bundle_v3_alt.txt.sigstore").read_bytes()
STAGING_SIGNER = ("william@yossarian.net", "https://github.com/login/oauth")
PUBLIC_INPUT = (DATA / "new_bundle.txt").read_bytes()
PUBLIC_BUNDLE = (DATA / "new_bundle.txt.sigstore.json").read_bytes()
PUBLIC_SIGNER = ("aryadeeptade@gmail.com", "https://github.com/login/oauth")

CI_IDENTITY = "https://github.com/acme/shop/.github/workflows/release.yml@refs/heads/main"
CI_ISSUER = "https://token.actions.githubusercontent.com"


def policy(identity: str, issuer: str, root: Path | None = None, **extra: str) -> SignaturePolicy:
    return SignaturePolicy.model_validate(
        {"identity": identity, "issuer": issuer,
         "trusted_root": str(root) if root else None, **extra}
    )


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> tuple[PrivateInstance, Path]:
    private = PrivateInstance()
    root = tmp_path_factory.mktemp("sigstore") / "trusted_root.json"
    root.write_text(json.dumps(private.trusted_root()))
    return private, root


# Real bundles, recorded from Sigstore ---------------------------------------------------


def test_real_staging_bundle_verifies_offline_for_the_digest_it_signs() -> None:
    root = load_trusted_root(str(STAGING_ROOT))
    who = verify_bundle(STAGING_BUNDLE, sha256_digest(STAGING_INPUT),
                        policy(*STAGING_SIGNER), root)
    assert who[:2] == STAGING_SIGNER
    assert who[2] == 25915997  # the Rekor log index recorded in the bundle


def test_real_public_good_bundle_verifies_against_the_embedded_root() -> None:
    root = load_trusted_root(None)
    who = verify_bundle(PUBLIC_BUNDLE, sha256_digest(PUBLIC_INPUT), policy(*PUBLIC_SIGNER), root)
    assert who[:2] == PUBLIC_SIGNER


def test_real_bundle_is_refused_for_any_other_digest() -> None:
    root = load_trusted_root(str(STAGING_ROOT))
    other = sha256_digest(STAGING_INPUT + b"tampered")
    with pytest.raises(ValueError, match=f"signs {sha256_digest(STAGING_INPUT)}, not {other}"):
        verify_bundle(STAGING_BUNDLE, other, policy(*STAGING_SIGNER), root)


def test_real_bundle_is_refused_for_a_wrong_identity() -> None:
    root = load_trusted_root(str(STAGING_ROOT))
    with pytest.raises(ValueError, match=re.escape(
            "identity william@yossarian.net does not match mallory@example.com")):
        verify_bundle(STAGING_BUNDLE, sha256_digest(STAGING_INPUT),
                      policy("mallory@example.com", STAGING_SIGNER[1]), root)


def test_real_bundle_is_refused_for_a_wrong_issuer() -> None:
    root = load_trusted_root(str(STAGING_ROOT))
    with pytest.raises(ValueError, match=re.escape(
            "issuer 'https://github.com/login/oauth' does not match "
            "https://accounts.google.com")):
        verify_bundle(STAGING_BUNDLE, sha256_digest(STAGING_INPUT),
                      policy(STAGING_SIGNER[0], "https://accounts.google.com"), root)


def test_real_staging_bundle_is_refused_under_the_public_good_root() -> None:
    with pytest.raises(ValueError, match=r"failed to build timestamp certificate chain"):
        verify_bundle(STAGING_BUNDLE, sha256_digest(STAGING_INPUT), policy(*STAGING_SIGNER),
                      load_trusted_root(None))


def test_real_bundle_with_a_broken_signature_is_refused() -> None:
    document = json.loads(STAGING_BUNDLE)
    raw = base64.b64decode(document["messageSignature"]["signature"])
    document["messageSignature"]["signature"] = base64.b64encode(
        raw[:-1] + bytes([raw[-1] ^ 1])).decode()
    with pytest.raises(ValueError, match="Signature is invalid for input"):
        verify_bundle(json.dumps(document).encode(), sha256_digest(STAGING_INPUT),
                      policy(*STAGING_SIGNER), load_trusted_root(str(STAGING_ROOT)))


def _layout_with_signed_input(tmp_path: Path, signed: bytes, bundle: bytes) -> str:
    """A layout whose index lists `signed` as a manifest, with `bundle` attached as its
    referrer: the recorded bundles sign text files, and verify binds whatever bytes the
    digest names."""
    store = LayoutStore(tmp_path / "layout", create=True)
    digest = sha256_digest(signed)
    store.push_blob(signed, digest)
    index = json.loads((store.root / "index.json").read_text())
    index["manifests"].append(Descriptor(MANIFEST, digest, len(signed)).to_json())
    (store.root / "index.json").write_text(json.dumps(index))
    manifest, blobs = bundle_manifest(bundle, Descriptor(MANIFEST, digest, len(signed)))
    assert attach(store, manifest, blobs) == "layout"
    return f"oci-layout:{store.root}@{digest}"


def test_lading_verify_finds_a_real_bundle_among_layout_referrers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _layout_with_signed_input(tmp_path, STAGING_INPUT, STAGING_BUNDLE)
    ran = lading(capsys, monkeypatch, "verify", ref, "-o", "json",
                 "--certificate-identity", STAGING_SIGNER[0],
                 "--certificate-oidc-issuer", STAGING_SIGNER[1],
                 "--trusted-root", str(STAGING_ROOT))
    assert ran.code == 0, ran.err
    result = json.loads(ran.out)
    assert result["verified"] is True
    assert result["digest"] == sha256_digest(STAGING_INPUT)
    assert result["signature"]["identity"] == STAGING_SIGNER[0]


def test_lading_verify_refuses_a_real_bundle_for_a_wrong_identity_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _layout_with_signed_input(tmp_path, STAGING_INPUT, STAGING_BUNDLE)
    ran = lading(capsys, monkeypatch, "verify", ref,
                 "--certificate-identity-regexp", r".*@acme\.example",
                 "--certificate-oidc-issuer", STAGING_SIGNER[1],
                 "--trusted-root", str(STAGING_ROOT))
    assert ran.code == 1
    assert ran.out == ""
    assert "no signature of" in ran.err
    assert "does not match /.*@acme\\.example/" in ran.err


# Lading artifacts signed by the private instance ----------------------------------------


def _signed_artifact(tmp_path: Path, instance: PrivateInstance, identity: str = CI_IDENTITY,
                     issuer: str = CI_ISSUER) -> tuple[str, LayoutStore, Descriptor]:
    ref = publish([config_map("a", "default", {"k": "v"})], f"oci-layout:{tmp_path}/art:v1")
    store = LayoutStore(tmp_path / "art")
    digest = ref.rsplit("@", 1)[1]
    raw, _ = store.fetch_manifest_raw(digest)
    subject = Descriptor(MANIFEST, digest, len(raw))
    manifest, blobs = bundle_manifest(instance.sign(raw, identity, issuer), subject)
    attach(store, manifest, blobs)
    return ref, store, subject


def test_signed_lading_artifact_verifies_with_exact_and_regexp_policies(
    tmp_path: Path, instance: tuple[PrivateInstance, Path]
) -> None:
    private, root = instance
    ref, _, subject = _signed_artifact(tmp_path, private)
    exact = verify(ref, policy(CI_IDENTITY, CI_ISSUER, root))
    assert exact.digest == subject.digest
    assert exact.signature.identity == CI_IDENTITY
    regexp = SignaturePolicy(identity_regexp=r"https://github\.com/acme/.*@refs/heads/main",
                             issuer_regexp=r"https://token\.actions\.githubusercontent\.com",
                             trusted_root=str(root))
    assert verify(ref, regexp).signature.issuer == CI_ISSUER


def test_unsigned_artifact_is_refused(tmp_path: Path, instance: tuple[PrivateInstance, Path]):
    _, root = instance
    ref = publish([config_map("a", "default", {"k": "v"})], f"oci-layout:{tmp_path}/art:v1")
    with pytest.raises(SignatureRefused, match="has no Sigstore signature") as refused:
        verify(ref, policy(CI_IDENTITY, CI_ISSUER, root))
    assert refused.value.exit_code == 1


def test_signature_of_another_artifact_is_refused_even_when_attached(
    tmp_path: Path, instance: tuple[PrivateInstance, Path]
) -> None:
    private, root = instance
    ref, _store, subject = _signed_artifact(tmp_path, private)
    # A genuine signature of a different manifest, attached to this one.
    manifest, blobs = bundle_manifest(private.sign(b"{}", CI_IDENTITY, CI_ISSUER), subject)
    store2 = LayoutStore(tmp_path / "other", create=True)
    attach(store2, manifest, blobs)
    with pytest.raises(SignatureRefused, match=r"the bundle signs sha256:44136fa3.*, not "
                       + subject.digest):
        check_signature(store2, subject, policy(CI_IDENTITY, CI_ISSUER, root))
    assert verify(ref, policy(CI_IDENTITY, CI_ISSUER, root)).verified


def test_signature_from_another_sigstore_instance_is_refused(
    tmp_path: Path, instance: tuple[PrivateInstance, Path]
) -> None:
    _, root = instance
    ref, _, _ = _signed_artifact(tmp_path, PrivateInstance())  # same identity, other CA
    with pytest.raises(SignatureRefused, match="certificate chain"):
        verify(ref, policy(CI_IDENTITY, CI_ISSUER, root))


@pytest.mark.parametrize(("bundle", "reason"), [
    (b"not json", "not a message-signature bundle"),
    (b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}',
     "not a message-signature bundle"),
    (json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                 "messageSignature": {"messageDigest": {"algorithm": "SHA2_256",
                                                        "digest": "@@"}}}).encode(),
     "not a message-signature bundle"),
], ids=["not-json", "no-message-signature", "bad-digest-encoding"])
def test_malformed_bundle_is_refused(tmp_path: Path, instance: tuple[PrivateInstance, Path],
                                     bundle: bytes, reason: str) -> None:
    _, root = instance
    ref = publish([config_map("a", "default", {"k": "v"})], f"oci-layout:{tmp_path}/art:v1")
    store = LayoutStore(tmp_path / "art")
    digest = ref.rsplit("@", 1)[1]
    raw, _ = store.fetch_manifest_raw(digest)
    attach(store, *bundle_manifest(bundle, Descriptor(MANIFEST, digest, len(raw))))
    with pytest.raises(SignatureRefused, match=reason):
        verify(ref, policy(CI_IDENTITY, CI_ISSUER, root))


def test_bundle_missing_its_verification_material_is_refused_as_malformed(
    tmp_path: Path, instance: tuple[PrivateInstance, Path]
) -> None:
    private, root = instance
    ref = publish([config_map("a", "default", {"k": "v"})], f"oci-layout:{tmp_path}/art:v1")
    store = LayoutStore(tmp_path / "art")
    digest = ref.rsplit("@", 1)[1]
    raw, _ = store.fetch_manifest_raw(digest)
    document = json.loads(private.sign(raw, CI_IDENTITY, CI_ISSUER))
    del document["verificationMaterial"]
    attach(store, *bundle_manifest(json.dumps(document).encode(),
                                   Descriptor(MANIFEST, digest, len(raw))))
    with pytest.raises(SignatureRefused, match="malformed Sigstore bundle"):
        verify(ref, policy(CI_IDENTITY, CI_ISSUER, root))


def test_tampered_bundle_blob_is_an_error_not_a_failed_candidate(
    tmp_path: Path, instance: tuple[PrivateInstance, Path]
) -> None:
    private, root = instance
    ref, store, subject = _signed_artifact(tmp_path, private)
    (referrer,) = store.referrers(subject.digest)
    layer = json.loads(store.fetch_manifest_raw(referrer.digest)[0])["layers"][0]
    assert layer["mediaType"] == BUNDLE
    blob = store.root / "blobs" / "sha256" / layer["digest"].split(":")[1]
    blob.write_bytes(blob.read_bytes().replace(b'"logIndex": "0"', b'"logIndex": "1"', 1))
    with pytest.raises(InputError, match="does not match its digest"):
        verify(ref, policy(CI_IDENTITY, CI_ISSUER, root))


# Policy contract --------------------------------------------------------------------------


@pytest.mark.parametrize(("document", "error"), [
    ({"issuer": CI_ISSUER}, "exactly one of identity and identity_regexp"),
    ({"identity": "a", "identity_regexp": "a", "issuer": CI_ISSUER},
     "exactly one of identity and identity_regexp"),
    ({"identity": "a"}, "exactly one of issuer and issuer_regexp"),
    ({"identity_regexp": "(", "issuer": CI_ISSUER}, "invalid regular expression"),
])
def test_policy_needs_one_identity_and_one_issuer(document: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SignaturePolicy.model_validate(document)


def test_install_plan_carries_the_policy() -> None:
    plan = InstallPlan.model_validate({"artifact": {"ref": "oci-layout:x@sha256:" + "0" * 64},
                                       "verify": {"identity": "a", "issuer": "b"}})
    assert plan.verify == SignaturePolicy(identity="a", issuer="b")


def test_certificate_flags_without_verify_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = lading(capsys, monkeypatch, "install", "oci-layout:x@sha256:" + "0" * 64,
                 "--certificate-identity", "a", "--certificate-oidc-issuer", "b")
    assert ran.code == 2
    assert "need --verify" in ran.err


# Signing without a network -------------------------------------------------------------


def _token(**claims: object) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    now = int(time.time())
    body = {"iss": "https://issuer.lading.test", "sub": "ci@lading.test", "aud": "sigstore",
            "iat": now, "exp": now + 600, **claims}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(body)}.c2VjcmV0LXNpZ25hdHVyZQ"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def artifact(tmp_path: Path) -> str:
    return publish([config_map("a", "default", {"k": "v"})], f"oci-layout:{tmp_path}/art:v1")


def test_sign_without_network_fails_with_exit_3_and_never_shows_the_token(
    artifact: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _token()
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", token)
    ran = lading(capsys, monkeypatch, "sign", artifact)
    assert ran.code == 3, ran.err
    assert "Sigstore" in ran.err
    assert "network" in ran.err
    assert token not in ran.err + ran.out
    assert token.split(".")[1] not in ran.err


def test_sign_against_an_unreachable_private_instance_fails_with_exit_3(
    artifact: str, tmp_path: Path, instance: tuple[PrivateInstance, Path],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    private, _ = instance
    config = tmp_path / "trust_config.json"
    config.write_text(json.dumps(private.trust_config(f"http://127.0.0.1:{_closed_port()}")))
    token = _token()
    ran = lading(capsys, monkeypatch, "sign", artifact, "--trust-config", str(config),
                 "--identity-token", token)
    assert ran.code == 3, ran.err
    assert "keyless signing failed" in ran.err
    assert "127.0.0.1" in ran.err
    assert token not in ran.err
    layout = LayoutStore(tmp_path / "art")
    assert layout.referrers(artifact.rsplit("@", 1)[1]) == []


def test_sign_without_any_identity_token_is_bad_input(
    artifact: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    for var in ("GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI",
                "GOOGLE_SERVICE_ACCOUNT_NAME"):
        monkeypatch.delenv(var, raising=False)
    ran = lading(capsys, monkeypatch, "sign", artifact)
    assert ran.code == 2
    assert "no OIDC identity token" in ran.err


def test_sign_with_an_expired_token_is_bad_input_and_does_not_echo_it(
    artifact: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _token(exp=1, iat=0)
    ran = lading(capsys, monkeypatch, "sign", artifact, "--identity-token", token)
    assert ran.code == 2
    assert "identity token is unusable" in ran.err
    assert token not in ran.err

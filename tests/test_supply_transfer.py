"""Carrying signed artifacts into an air-gapped site, against real registries and a real
kube-apiserver: registry → export tar → import into another registry → install by the same
digest, with the signature verifying at the far end.

docker-registry has no referrers API (signatures travel through the `sha256-<hex>` tag
fallback); refreg, standing in for zot, has it. Signatures come from the in-memory private
Sigstore instance (tests/sigstore_instance.py): signing against public Sigstore needs a network.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from plans.install import InstallPlan
from plans.supply import SignaturePolicy
from runner.common.digest import DigestMismatch
from runner.common.errors import InputError, RemoteError
from runner.common.kube import KubeClient, Resource
from runner.common.oci import MANIFEST, Descriptor
from runner.common.reference import parse_ref
from runner.common.registry import RegistryStore
from runner.common.store import RegistryOptions, open_store
from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint
from runner.install.install import install
from runner.supply.export import export
from runner.supply.imports import import_layout
from runner.supply.referrers import attach, bundle_manifest
from runner.supply.verify import SignatureRefused, verify
from tests.artifacts import config_map, publish, unique
from tests.clirun import lading
from tests.sigstore_instance import PrivateInstance

# Every test here needs the cluster (each works in its own namespace) and docker-registry; those
# that also use refreg's referrers API say so.
pytestmark = [pytest.mark.cluster, pytest.mark.registry]

IDENTITY = "https://github.com/acme/shop/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", True)
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", False)
SECRETS = Resource("", "v1", "Secret", "secrets", True)


@pytest.fixture(scope="module")
def sigstore(tmp_path_factory: pytest.TempPathFactory) -> tuple[PrivateInstance, Path]:
    private = PrivateInstance()
    root = tmp_path_factory.mktemp("sigstore") / "trusted_root.json"
    root.write_text(json.dumps(private.trusted_root()))
    return private, root


def policy(root: Path) -> SignaturePolicy:
    return SignaturePolicy(identity=IDENTITY, issuer=ISSUER, trusted_root=str(root))


def signed(registry: RegistryEndpoint, sigstore: tuple[PrivateInstance, Path], ns: str) -> str:
    """Publish a lading artifact to `registry` and attach a signature of its digest."""
    private, _ = sigstore
    ref = publish([config_map("settings", ns, {"colour": "blue"})],
                  f"{registry.host}/{unique('shop')}/app:v1")
    pinned = parse_ref(ref)
    store = open_store(pinned)
    try:
        raw, _ = store.fetch_manifest_raw(pinned.digest or "")
        subject = Descriptor(MANIFEST, pinned.digest or "", len(raw))
        attach(store, *bundle_manifest(private.sign(raw, IDENTITY, ISSUER), subject))
    finally:
        store.close()
    return ref


def plan(ref: str, ns: str, cluster: ClusterEndpoint, **fields: Any) -> InstallPlan:
    return InstallPlan.model_validate({
        "artifact": {"ref": ref}, "target": {"kubeconfig": str(cluster.kubeconfig)},
        "namespace": ns, "inventory": "app", "wait": False, **fields,
    })


def fallback_index(registry: RegistryEndpoint, repository: str, digest: str) -> list[str]:
    store = RegistryStore(registry.host, repository, RegistryOptions(), True)
    try:
        return [m["digest"] for m in store.fallback_referrers(digest)]
    finally:
        store.close()


@pytest.mark.referrers
def test_signed_artifact_crosses_the_air_gap_and_installs_verified_by_the_same_digest(
    registry: RegistryEndpoint, referrers_registry: RegistryEndpoint,
    sigstore: tuple[PrivateInstance, Path], control_plane: ClusterEndpoint,
    kube: KubeClient, ns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # docker-registry (tag fallback) → tar → refreg (referrers API)
    ref = signed(registry, sigstore, ns)
    digest = ref.rsplit("@", 1)[1]
    repo = parse_ref(ref).repository
    assert len(fallback_index(registry, repo, digest)) == 1  # the signature went via the tag

    carry = tmp_path / "carry.tar"
    t0 = time.monotonic()
    exported = export(ref, str(carry))
    export_seconds = time.monotonic() - t0
    assert exported.digest == digest
    assert len(exported.referrers) == 1
    with tarfile.open(carry) as tar:
        sums = tar.extractfile("SHA256SUMS")
        assert sums is not None
        assert digest.split(":")[1].encode() in sums.read()

    far = f"{referrers_registry.host}/airgap/app:v1"
    t0 = time.monotonic()
    imported = import_layout(str(carry), far)
    import_seconds = time.monotonic() - t0
    assert imported.digest == digest
    assert imported.referrers == exported.referrers
    assert imported.ref == f"{referrers_registry.host}/airgap/app@{digest}"
    with capsys.disabled():
        print(f"\n  export {export_seconds:.3f}s, import {import_seconds:.3f}s "
              f"({exported.size} bytes, {len(exported.referrers)} referrer)")

    # The far registry has the referrers API: the signature is found there, not via a tag.
    assert fallback_index(referrers_registry, "airgap/app", digest) == []
    at_far_end = verify(imported.ref, policy(sigstore[1]))
    assert at_far_end.signature.referrer == exported.referrers[0]

    result = install(plan(imported.ref, ns, control_plane, verify=policy(sigstore[1])))
    assert result.digest == digest
    assert result.status == "succeeded"
    assert kube.get(CONFIGMAPS, ns, "settings")["data"] == {"colour": "blue"}


@pytest.mark.referrers
def test_import_into_a_registry_without_referrers_api_keeps_signatures_via_the_tag_fallback(
    registry: RegistryEndpoint, referrers_registry: RegistryEndpoint,
    sigstore: tuple[PrivateInstance, Path], tmp_path: Path, ns: str,
) -> None:
    # refreg (referrers API) → layout directory → docker-registry (tag fallback)
    ref = signed(referrers_registry, sigstore, ns)
    digest = ref.rsplit("@", 1)[1]
    exported = export(ref, str(tmp_path / "carry"))
    repo = unique("mirror") + "/app"
    imported = import_layout(str(tmp_path / "carry"), f"{registry.host}/{repo}")
    assert imported.digest == digest
    assert fallback_index(registry, repo, digest) == exported.referrers
    assert verify(imported.ref, policy(sigstore[1])).verified

    # Importing again pushes no blob and does not duplicate the fallback entry.
    again = import_layout(str(tmp_path / "carry"), f"{registry.host}/{repo}")
    assert again.blobs_copied == 0
    assert again.blobs_skipped == imported.blobs_copied
    assert fallback_index(registry, repo, digest) == exported.referrers


def test_install_straight_from_the_tar_verifies_offline(
    registry: RegistryEndpoint, sigstore: tuple[PrivateInstance, Path],
    control_plane: ClusterEndpoint, kube: KubeClient, ns: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = signed(registry, sigstore, ns)
    digest = ref.rsplit("@", 1)[1]
    export(ref, str(tmp_path / "carry.tar"))
    ran = lading(capsys, monkeypatch, "install", f"oci-layout:{tmp_path}/carry.tar@{digest}",
                 "-n", ns, "--inventory", "app", "--no-wait", "--kubeconfig",
                 str(control_plane.kubeconfig), "--verify",
                 "--certificate-identity", IDENTITY, "--certificate-oidc-issuer", ISSUER,
                 "--trusted-root", str(sigstore[1]), "-o", "json")
    assert ran.code == 0, ran.err
    assert json.loads(ran.out)["digest"] == digest
    assert kube.get(CONFIGMAPS, ns, "settings")["data"] == {"colour": "blue"}


def test_install_refuses_an_unsigned_artifact_before_writing_anything(
    registry: RegistryEndpoint, sigstore: tuple[PrivateInstance, Path],
    control_plane: ClusterEndpoint, kube: KubeClient, ns: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = publish([config_map("settings", ns, {"colour": "red"})],
                  f"{registry.host}/{unique('shop')}/app:v1")
    ran = lading(capsys, monkeypatch, "install", ref, "-n", ns, "--no-wait",
                 "--kubeconfig", str(control_plane.kubeconfig), "--verify",
                 "--certificate-identity", IDENTITY, "--certificate-oidc-issuer", ISSUER,
                 "--trusted-root", str(sigstore[1]))
    assert ran.code == 1
    assert "has no Sigstore signature" in ran.err
    written = [c["metadata"]["name"] for c in kube.list(CONFIGMAPS, ns)]
    assert "settings" not in written
    assert [s["metadata"]["name"] for s in kube.list(SECRETS, ns)] == []  # no inventory either


def test_install_refuses_a_signature_by_someone_else(
    registry: RegistryEndpoint, sigstore: tuple[PrivateInstance, Path],
    control_plane: ClusterEndpoint, ns: str,
) -> None:
    ref = signed(registry, sigstore, ns)
    wrong = SignaturePolicy(identity="https://github.com/evil/fork/.github/workflows/x.yml@refs/"
                            "heads/main", issuer=ISSUER, trusted_root=str(sigstore[1]))
    with pytest.raises(SignatureRefused, match=r"does not match https://github\.com/evil/fork"):
        install(plan(ref, ns, control_plane, verify=wrong))


def _tamper_config_blob(tar_path: Path, out: Path, digest_hex: str) -> None:
    """Copy the tar, flipping one byte of the blob `digest_hex` (a byte-level edit, the way a
    damaged or doctored carry looks)."""
    with tarfile.open(tar_path) as src, tarfile.open(out, "w") as dst:
        for member in src:
            data = src.extractfile(member) if member.isfile() else None
            if data is not None and member.name.endswith(digest_hex):
                content = bytearray(data.read())
                content[len(content) // 2] ^= 0x01
                dst.addfile(member, io.BytesIO(bytes(content)))
            else:
                dst.addfile(member, data)


@pytest.mark.referrers
def test_tampered_blob_in_the_tar_is_refused_on_import_and_on_install(
    registry: RegistryEndpoint, referrers_registry: RegistryEndpoint,
    sigstore: tuple[PrivateInstance, Path], control_plane: ClusterEndpoint,
    ns: str, tmp_path: Path,
) -> None:
    ref = signed(registry, sigstore, ns)
    digest = ref.rsplit("@", 1)[1]
    export(ref, str(tmp_path / "carry.tar"))
    store = open_store(parse_ref(ref))
    try:
        document = json.loads(store.fetch_manifest_raw(digest)[0])
    finally:
        store.close()
    layer, config = document["layers"][0]["digest"], document["config"]["digest"]
    bad = tmp_path / "bad.tar"
    _tamper_config_blob(tmp_path / "carry.tar", bad, layer.split(":")[1])

    target = f"{referrers_registry.host}/{unique('tampered')}/app"
    with pytest.raises(DigestMismatch, match="does not match SHA256SUMS"):
        import_layout(str(bad), target)
    # Nothing was pushed: not even the blobs that were intact.
    dest = open_store(parse_ref(target))
    try:
        assert not dest.has_blob(config)
        with pytest.raises(InputError, match="not found"):
            dest.resolve(digest)
    finally:
        dest.close()

    with pytest.raises(DigestMismatch, match="does not match its digest"):
        install(plan(f"oci-layout:{bad}@{digest}", ns, control_plane))


@pytest.mark.referrers
def test_interrupted_import_resumes_and_skips_what_already_arrived(
    registry: RegistryEndpoint, referrers_registry: RegistryEndpoint,
    sigstore: tuple[PrivateInstance, Path], ns: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = signed(registry, sigstore, ns)
    export(ref, str(tmp_path / "carry.tar"))
    target = f"{referrers_registry.host}/{unique('resume')}/app"
    real_push = RegistryStore.push_blob
    first: list[str] = []
    second: list[str] = []

    def flaky(self: RegistryStore, data: bytes, digest: str) -> bool:
        if len(first) == 2:
            raise RemoteError("connection reset (injected)")
        first.append(digest)
        return real_push(self, data, digest)

    def recorded(self: RegistryStore, data: bytes, digest: str) -> bool:
        second.append(digest)
        return real_push(self, data, digest)

    monkeypatch.setattr(RegistryStore, "push_blob", flaky)
    with pytest.raises(RemoteError, match="injected"):
        import_layout(str(tmp_path / "carry.tar"), target)
    monkeypatch.setattr(RegistryStore, "push_blob", recorded)

    resumed = import_layout(str(tmp_path / "carry.tar"), target)
    assert len(first) == 2
    assert second  # the interruption left work to do…
    assert not set(first) & set(second)  # …and what had arrived was not sent again
    assert resumed.blobs_copied == len(second)
    assert resumed.blobs_skipped + resumed.blobs_copied == 4  # config, layer, {}, bundle
    assert verify(resumed.ref, policy(sigstore[1])).verified

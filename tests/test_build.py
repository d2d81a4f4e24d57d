"""The build runner against the real registry and the real kustomize (and helm) binaries."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import oras.client
import pytest
import yaml

from plans.build import (
    BuildPlan,
    ImageOverride,
    InlineSource,
    KustomizeSource,
    Patch,
    PatchTarget,
    Source,
)
from runner.build.build import build
from runner.build.package import CONTENT_FILE
from runner.common import transport
from runner.common.oci import LADING_ARTIFACT
from runner.common.reference import parse_ref
from runner.common.store import RegistryOptions, open_store, resolve_manifest
from runner.dev.endpoints import RegistryEndpoint
from tests.artifacts import unique
from tests.build_helpers import (
    DATA,
    EXAMPLES,
    objects_by_id,
    push_flux_artifact,
    read_back,
    signature_for,
)
from tests.clirun import Ran, lading

pytestmark = [pytest.mark.kustomize]


@pytest.fixture(autouse=True)
def _tools(kustomize_bin: Path, helm_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pinned binaries, whatever happens to be on PATH; no SOURCE_DATE_EPOCH from the CI
    # environment, so `created` comes from git as it would for a user.
    monkeypatch.setenv("LADING_KUSTOMIZE", str(kustomize_bin))
    monkeypatch.setenv("LADING_HELM", str(helm_bin))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def _json(ran: Ran) -> dict[str, Any]:
    assert ran.code == 0, ran.err
    document: dict[str, Any] = json.loads(ran.out)  # stdout holds the result and nothing else
    return document


def _repo(registry: RegistryEndpoint, name: str) -> str:
    return f"{registry.host}/{unique('build')}/{name}"


# -- kustomize features --------------------------------------------------------------------------


@pytest.mark.registry
def test_prod_overlay_brings_base_component_generators_patches_and_images(
    capsys, monkeypatch, registry: RegistryEndpoint
) -> None:
    repo = _repo(registry, "shop")
    result = _json(
        lading(
            capsys,
            monkeypatch,
            "build",
            "--kustomize",
            str(EXAMPLES / "overlays/prod"),
            "--to",
            f"{repo}:1.4.2",
            "--to",
            f"{repo}:latest",
            "--version",
            "1.4.2",
            "-o",
            "json",
        )
    )
    assert result["ref"] == f"{repo}@{result['digest']}"
    assert result["refs"] == [result["ref"], result["ref"]]
    assert result["tags"] == ["1.4.2", "latest"]
    assert result["objects"] == 14
    assert result["source"]["path"] == "examples/overlays/prod"
    assert len(result["source"]["revision"]) == 40

    content = read_back(f"{repo}:latest")
    objects = objects_by_id(content)
    assert content.format == "lading"
    assert content.config["version"] == "1.4.2"
    assert content.config["inputs"]["tools"]["kustomize"].startswith("v5")
    assert content.config["objects"]["ids"] == list(objects)
    ids = list(objects)
    assert ids[0] == "apiextensions.k8s.io/v1/CustomResourceDefinition//widgets.shop.example.com"
    assert ids[1] == "/v1/Namespace//shop-prod"

    web = objects["apps/v1/Deployment/shop-prod/web"]
    assert web["spec"]["replicas"] == 3
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/shop/web:1.4.2"
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert web["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    # configMapGenerator: a hash-suffixed name, and the Deployment refers to exactly that name.
    generated = [i for i in ids if "/ConfigMap/shop-prod/web-config-" in i]
    assert len(generated) == 1
    assert container["envFrom"][0]["configMapRef"]["name"] == generated[0].rsplit("/", 1)[1]
    assert any("/ConfigMap/shop-prod/web-dashboard-" in i for i in ids)  # from the component
    db = objects["apps/v1/StatefulSet/shop-prod/db"]
    assert (
        db["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    )
    assert db["spec"]["template"]["spec"]["containers"][0]["image"].endswith("postgres:16.4")
    assert objects["networking.k8s.io/v1/Ingress/shop-prod/web"]["spec"]["rules"][0]["host"] == (
        "shop.example.com"
    )
    assert "shop.example.com/v1/Widget/shop-prod/featured" in objects
    assert (
        objects["autoscaling/v2/HorizontalPodAutoscaler/shop-prod/web"]["spec"]["minReplicas"] == 3
    )


def test_dev_and_prod_overlays_generate_different_config_hashes(tmp_path: Path) -> None:
    names = {}
    for overlay in ("dev", "prod"):
        plan = BuildPlan(
            source=Source(kustomize=KustomizeSource(path=str(EXAMPLES / "overlays" / overlay))),
            to=[f"oci-layout:{tmp_path / overlay}:v1"],
        )
        build(plan)
        objects = objects_by_id(read_back(f"oci-layout:{tmp_path / overlay}:v1"))
        (cm,) = [i for i in objects if "/ConfigMap/" in i and "web-config-" in i]
        names[overlay] = cm.rsplit("/", 1)[1]
        assert objects[cm]["data"]["LOG_LEVEL"] == ("debug" if overlay == "dev" else "info")
    assert names["dev"] != names["prod"]


def test_plan_patches_and_image_overrides_wrap_the_users_overlay(tmp_path: Path) -> None:
    plan = BuildPlan(
        source=Source(
            kustomize=KustomizeSource(
                path="overlays/dev",
                images=[
                    ImageOverride(
                        name="registry.example/shop/web",
                        newName="mirror.example/web",
                        newTag="2.0.0",
                    )
                ],
                patches=[
                    Patch(
                        patch="- op: add\n  path: /metadata/labels/team\n  value: storefront\n",
                        target=PatchTarget(kind="Deployment", name="web"),
                    )
                ],
            )
        ),
        to=[f"oci-layout:{tmp_path / 'out'}:v1"],
    )
    result = build(plan, base=EXAMPLES)  # a relative path resolves against `base`
    objects = objects_by_id(read_back(f"oci-layout:{tmp_path / 'out'}:v1"))
    web = objects["apps/v1/Deployment/shop-dev/web"]
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "mirror.example/web:2.0.0"
    assert web["metadata"]["labels"]["team"] == "storefront"
    assert web["spec"]["replicas"] == 1  # the overlay still applies underneath
    assert result.source.path == "examples/overlays/dev"  # the user's directory, not the wrapper


def test_helm_chart_inflates_from_a_local_chart_when_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # helm's caches, not the user's
    chart_dir = tmp_path / "helm"
    shutil.copytree(DATA / "helm", chart_dir)
    to = f"oci-layout:{tmp_path / 'out'}:v1"
    result = build(
        BuildPlan(
            source=Source(kustomize=KustomizeSource(path=str(chart_dir), enable_helm=True)), to=[to]
        )
    )
    content = read_back(to)
    objects = objects_by_id(content)
    assert result.objects == 2
    assert objects["/v1/ConfigMap//hi-greeting"]["data"] == {"greeting": "bonjour"}
    assert objects["apps/v1/Deployment//hi"]["spec"]["replicas"] == 2
    assert content.config["inputs"]["enable_helm"] is True
    assert content.config["inputs"]["tools"]["helm"].startswith("v3")


def test_helm_charts_are_not_inflated_unless_enabled(capsys, monkeypatch, tmp_path: Path) -> None:
    ran = lading(
        capsys,
        monkeypatch,
        "build",
        "--kustomize",
        str(DATA / "helm"),
        "--to",
        f"oci-layout:{tmp_path}/out:v1",
    )
    assert ran.code == 2
    assert "kustomize build" in ran.err
    assert "enable-helm" in ran.err  # kustomize says what to do; we pass it through


def test_inline_files_and_yaml_text_are_packed_together(tmp_path: Path) -> None:
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: inl\n")
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: inl}\ndata: {a: '1'}\n"
    to = f"oci-layout:{tmp_path / 'out'}:v1"
    result = build(
        BuildPlan(source=Source(inline=InlineSource(files=["ns.yaml"], manifests=text)), to=[to]),
        base=tmp_path,
    )
    assert result.objects == 2
    content = read_back(to)
    assert list(objects_by_id(content)) == ["/v1/Namespace//inl", "/v1/ConfigMap/inl/c"]
    assert content.config["inputs"]["type"] == "inline"


def test_plan_file_paths_resolve_against_its_directory_and_flags_override_it(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    (plans / "plan.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "lading.dev/v1",
                "kind": "BuildPlan",
                "source": {"inline": {"files": ["cm.yaml"]}},
                "to": ["oci-layout:out:v1"],
                "version": "1.0.0",
            }
        )
    )
    monkeypatch.chdir(tmp_path)  # not the plan's directory
    result = _json(
        lading(
            capsys,
            monkeypatch,
            "build",
            "-f",
            str(plans / "plan.yaml"),
            "--version",
            "2.0.0",
            "--annotation",
            "team=shop",
            "-o",
            "json",
        )
    )
    assert result["version"] == "2.0.0"
    assert result["ref"].startswith(f"oci-layout:{plans / 'out'}@sha256:")
    manifest = read_back(f"oci-layout:{plans / 'out'}:v1").manifest
    assert manifest.annotations["team"] == "shop"
    assert manifest.annotations["org.opencontainers.image.version"] == "2.0.0"


# -- reproducibility ---------------------------------------------------------------------------


def _build_copy(tmp: Path, edit: bool = False) -> str:
    tree = tmp / "examples"
    shutil.copytree(EXAMPLES, tree)
    if edit:
        path = tree / "base" / "config" / "features.json"
        path.write_text(path.read_text().replace("false", "fals3", 1))
    to = f"oci-layout:{tmp / 'out'}:v1"
    return build(
        BuildPlan(source=Source(kustomize=KustomizeSource(path="overlays/prod")), to=[to]),
        base=tree,
    ).digest


def test_same_inputs_in_two_directories_give_the_same_digest(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    one = _build_copy(tmp_path_factory.mktemp("one"))
    two = _build_copy(tmp_path_factory.mktemp("two-with-a-longer-name"))
    assert one == two


def test_a_one_byte_change_gives_a_different_digest(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    assert _build_copy(tmp_path_factory.mktemp("a")) != _build_copy(
        tmp_path_factory.mktemp("b"), edit=True
    )


def test_source_date_epoch_sets_created_and_the_digest_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = BuildPlan(
        source=Source(kustomize=KustomizeSource(path=str(EXAMPLES / "overlays/dev"))),
        to=[f"oci-layout:{tmp_path / 'out'}"],
    )
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = build(plan)
    assert first.source.created == "2023-11-14T22:13:20Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")
    assert build(plan).digest != first.digest


# -- destinations ------------------------------------------------------------------------------


def test_layout_directory_and_tar_hold_the_same_artifact(
    capsys, monkeypatch, tmp_path: Path
) -> None:
    result = _json(
        lading(
            capsys,
            monkeypatch,
            "build",
            "--kustomize",
            str(EXAMPLES / "overlays/dev"),
            "--to",
            f"oci-layout:{tmp_path / 'dir'}:dev",
            "--to",
            f"{tmp_path / 'carry.tar'}:dev",
            "-o",
            "json",
        )
    )
    assert result["refs"] == [
        f"oci-layout:{tmp_path / 'dir'}@{result['digest']}",
        f"oci-layout:{tmp_path / 'carry.tar'}@{result['digest']}",
    ]
    index = json.loads((tmp_path / "dir" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == result["digest"]
    assert index["manifests"][0]["artifactType"] == LADING_ARTIFACT
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "dev"
    with tarfile.open(tmp_path / "carry.tar") as tar:
        assert "oci-layout" in tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    for ref in (
        f"oci-layout:{tmp_path / 'dir'}@{result['digest']}",
        f"{tmp_path / 'carry.tar'}:dev",
    ):
        inspected = _json(lading(capsys, monkeypatch, "inspect", ref, "-o", "json"))
        assert inspected["digest"] == result["digest"]
        assert len(inspected["objects"]) == result["objects"]


@pytest.mark.registry
def test_oras_pull_gets_the_manifests_without_lading(
    tmp_path: Path, registry: RegistryEndpoint
) -> None:
    repo = _repo(registry, "shop")
    result = build(
        BuildPlan(
            source=Source(kustomize=KustomizeSource(path=str(EXAMPLES / "overlays/dev"))),
            to=[f"{repo}:dev"],
        )
    )
    out = tmp_path / "pulled"
    files = oras.client.OrasClient(insecure=True).pull(target=f"{repo}:dev", outdir=str(out))
    # oras saves each layer under its title; lading's layer is a gzipped tar, titled so.
    assert [Path(f).name for f in files] == ["manifests.tar.gz"]
    with tarfile.open(files[0]) as tar:
        tar.extractall(out, filter="data")
    stream = (out / CONTENT_FILE).read_text()
    documents = [d for d in yaml.safe_load_all(stream) if d]
    assert len(documents) == result.objects
    assert {d["kind"] for d in documents} >= {
        "Deployment",
        "StatefulSet",
        "CustomResourceDefinition",
    }


@pytest.mark.registry
def test_pushing_again_skips_blobs_the_registry_has(
    capsys, monkeypatch, registry: RegistryEndpoint
) -> None:
    repo = _repo(registry, "shop")
    args = [
        "build",
        "--kustomize",
        str(EXAMPLES / "overlays/dev"),
        "--to",
        f"{repo}:a",
        "-o",
        "json",
    ]
    first = _json(lading(capsys, monkeypatch, *args))
    ran = lading(capsys, monkeypatch, *args[:-4], "--to", f"{repo}:b", "-o", "json")
    assert _json(ran)["digest"] == first["digest"]
    assert ran.err.count("already present") == 2  # config and layer


@pytest.mark.registry
def test_push_with_basic_auth_and_a_private_ca(
    capsys, monkeypatch, tmp_path: Path, registry_auth_tls: RegistryEndpoint
) -> None:
    endpoint = registry_auth_tls.with_password_from_file()
    assert endpoint.password is not None
    assert endpoint.ca_file is not None
    password = endpoint.password.get_secret_value()
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    token = base64.b64encode(f"{endpoint.username}:{password}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {endpoint.host: {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    repo = f"{endpoint.host}/{unique('auth')}/shop"
    ran = lading(
        capsys,
        monkeypatch,
        "build",
        "--kustomize",
        str(EXAMPLES / "overlays/dev"),
        "--to",
        f"{repo}:dev",
        "--ca-file",
        str(endpoint.ca_file),
        "-v",
        "-o",
        "json",
    )
    result = _json(ran)
    assert result["ref"] == f"{repo}@{result['digest']}"
    assert password not in ran.out + ran.err
    inspected = _json(
        lading(
            capsys,
            monkeypatch,
            "inspect",
            f"{repo}:dev",
            "--ca-file",
            str(endpoint.ca_file),
            "-o",
            "json",
        )
    )
    assert inspected["digest"] == result["digest"]


@pytest.mark.registry
def test_a_push_keeps_its_connections_to_the_registry(
    capsys, monkeypatch, tmp_path: Path, registry_auth_tls: RegistryEndpoint
) -> None:
    # Over TLS each new connection is a handshake: a push (HEAD, POST and PUT for two blobs
    # side by side, a 401 and a login, the manifest's PUT and its read-back) must not open one
    # per request.
    endpoint = registry_auth_tls.with_password_from_file()
    assert endpoint.password is not None
    assert endpoint.ca_file is not None
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    token = base64.b64encode(
        f"{endpoint.username}:{endpoint.password.get_secret_value()}".encode()
    ).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {endpoint.host: {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    connects: list[str] = []
    real_connect = transport._Watched.connect

    def counted(self: transport._Watched) -> None:
        connects.append(self.host)
        real_connect(self)

    monkeypatch.setattr(transport._Watched, "connect", counted)
    repo = f"{endpoint.host}/{unique('conns')}/shop"
    ran = lading(capsys, monkeypatch, "build", "--kustomize", str(EXAMPLES / "overlays/dev"),
                 "--to", f"{repo}:dev", "--ca-file", str(endpoint.ca_file), "-v")
    assert ran.err.count("pushed blob") == 2
    assert "pushed manifest" in ran.err
    assert 1 <= len(connects) <= 2, connects  # one per blob uploaded side by side


@pytest.mark.registry
def test_a_push_and_a_pull_do_not_load_jsonschema(registry: RegistryEndpoint) -> None:
    # oras.provider imports jsonschema (about 45 ms of every start) for manifest checks lading
    # makes itself; the registry client goes through oras.auth alone.
    repo = _repo(registry, "lean")
    probe = ("import sys; from runner.cli import main\n"
             "try:\n    main(sys.argv[1:])\n"
             "except SystemExit as e:\n    assert not e.code, e.code\n"
             "print('jsonschema loaded:', 'jsonschema' in sys.modules)")
    for args in (["build", "--kustomize", str(EXAMPLES / "overlays/dev"), "--to", f"{repo}:dev",
                  "-q"],
                 ["inspect", f"{repo}:dev", "-o", "json"]):
        ran = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                             text=True, timeout=120)
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert "jsonschema loaded: False" in ran.stdout, (args, ran.stdout[-500:])


# -- bring your own artifact -------------------------------------------------------------------


@pytest.mark.registry
def test_copying_a_lading_artifact_keeps_its_digest(
    capsys, monkeypatch, tmp_path: Path, registry: RegistryEndpoint
) -> None:
    source = f"oci-layout:{tmp_path / 'src'}:v1"
    built = build(
        BuildPlan(
            source=Source(kustomize=KustomizeSource(path=str(EXAMPLES / "overlays/prod"))),
            to=[source],
            version="1.4.2",
        )
    )
    repo = _repo(registry, "mirror")
    copied = _json(
        lading(
            capsys,
            monkeypatch,
            "build",
            "--artifact",
            built.ref,
            "--to",
            f"{repo}:1.4.2",
            "-o",
            "json",
        )
    )
    assert copied["copied"] is True
    assert copied["digest"] == built.digest
    assert copied["size"] == built.size
    assert copied["objects"] == built.objects
    assert copied["version"] == "1.4.2"
    assert copied["source"]["revision"] == built.source.revision
    store = open_store(parse_ref(f"{repo}:1.4.2"), RegistryOptions())
    try:
        assert resolve_manifest(store, parse_ref(f"{repo}:1.4.2")).descriptor.digest == built.digest
    finally:
        store.close()


@pytest.mark.registry
def test_copying_a_flux_artifact_keeps_its_digest_and_format(
    capsys, monkeypatch, registry: RegistryEndpoint
) -> None:
    source = push_flux_artifact(
        f"{_repo(registry, 'flux')}:main",
        {
            "deploy/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: fluxy}\n",
            "deploy/app.yaml": "apiVersion: v1\nkind: ConfigMap\n"
            "metadata: {name: a, namespace: fluxy}\n"
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: fluxy}\n",
            "deploy/kustomization.yaml": "resources: [ns.yaml, app.yaml]\n",
        },
    )
    repo = _repo(registry, "mirror")
    copied = _json(
        lading(
            capsys, monkeypatch, "build", "--artifact", source, "--to", f"{repo}:v1", "-o", "json"
        )
    )
    assert copied["digest"] == source.rsplit("@", 1)[1]
    assert copied["objects"] == 3
    assert copied["source"]["url"] == "https://git.example/flux/app.git"
    inspected = _json(lading(capsys, monkeypatch, "inspect", f"{repo}:v1", "-o", "json"))
    assert inspected["format"] == "flux"
    assert inspected["config"] == {}
    assert inspected["objects"] == [
        "/v1/ConfigMap/fluxy/a",
        "/v1/ConfigMap/fluxy/b",
        "/v1/Namespace//fluxy",
    ]


# -- inspect -----------------------------------------------------------------------------------


@pytest.mark.referrers
def test_inspect_shows_metadata_objects_and_signatures(
    capsys, monkeypatch, referrers_registry: RegistryEndpoint
) -> None:
    repo = f"{referrers_registry.host}/{unique('inspect')}/shop"
    built = build(
        BuildPlan(
            source=Source(kustomize=KustomizeSource(path=str(EXAMPLES / "overlays/prod"))),
            to=[f"{repo}:1.4.2"],
            version="1.4.2",
        )
    )
    store = open_store(parse_ref(f"{repo}:1.4.2"), RegistryOptions())
    try:
        subject = resolve_manifest(store, parse_ref(f"{repo}:1.4.2")).descriptor
    finally:
        store.close()
    signature = signature_for(f"{repo}:unused", subject)

    inspected = _json(lading(capsys, monkeypatch, "inspect", f"{repo}:1.4.2", "-o", "json"))
    assert inspected["ref"] == built.ref
    assert inspected["artifact_type"] == LADING_ARTIFACT
    assert inspected["format"] == "lading"
    assert inspected["config"]["version"] == "1.4.2"
    assert inspected["config"]["checksum"] == built.checksum
    assert inspected["config"]["source"]["path"] == "examples/overlays/prod"
    assert len(inspected["objects"]) == built.objects
    assert inspected["annotations"]["org.opencontainers.image.version"] == "1.4.2"
    assert [r["digest"] for r in inspected["referrers"]] == [signature]
    assert (
        inspected["referrers"][0]["artifact_type"]
        == "application/vnd.dev.sigstore.bundle.v0.3+json"
    )

    text = lading(capsys, monkeypatch, "inspect", f"{repo}:1.4.2")
    assert text.code == 0, text.err
    assert built.digest in text.out
    assert "apps/v1/Deployment/shop-prod/web" in text.out
    assert signature in text.out

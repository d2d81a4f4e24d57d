"""Pure build logic, no servers: references, the object model, packaging, source detection."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from plans.build import SourceMetadata
from runner.build import source as source_module
from runner.build.inventory import default_inventory
from runner.build.package import CONTENT_FILE, ArtifactMeta, package
from runner.build.source import detect, redact_url
from runner.common.errors import InputError
from runner.common.objects import (
    canonical_order,
    check_objects,
    dump_stream,
    normalise,
    object_id,
    parse_stream,
)
from runner.common.oci import LADING_ARTIFACT, LADING_CONFIG, LADING_CONTENT
from runner.common.reference import parse_ref
from runner.common.workspace import confine, refuse_escaping_links

DIGEST = "sha256:" + "ab" * 32

# -- references --------------------------------------------------------------------------------


def test_registry_reference_with_port_nested_repository_and_tag() -> None:
    ref = parse_ref("registry.example:5000/team/app:1.2.3")
    assert (ref.kind, ref.location, ref.repository, ref.tag, ref.digest) == (
        "registry",
        "registry.example:5000",
        "team/app",
        "1.2.3",
        None,
    )
    assert ref.short_name == "app"
    assert (
        ref.with_digest(DIGEST).with_tag(None).pinned()
        == f"registry.example:5000/team/app@{DIGEST}"
    )


def test_registry_reference_by_digest() -> None:
    ref = parse_ref(f"localhost:5000/app@{DIGEST}")
    assert ref.digest == DIGEST
    assert ref.tag is None
    assert ref.is_loopback


def test_layout_references_take_a_tag_or_a_digest() -> None:
    tagged = parse_ref("oci-layout:./carry/dir:v1")
    assert (tagged.kind, tagged.location, tagged.tag) == ("layout", "./carry/dir", "v1")
    pinned = parse_ref(f"oci-layout:/abs/dir@{DIGEST}")
    assert (pinned.location, pinned.digest) == ("/abs/dir", DIGEST)
    tar = parse_ref("bundle.tar:v2")
    assert (tar.kind, tar.location, tar.tag) == ("layout-tar", "bundle.tar", "v2")
    assert parse_ref("oci-layout:out/bundle.tar").kind == "layout-tar"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("app:latest", "no registry host"),
        ("team/app:latest", "is not a registry host"),
        ("registry.example/Team/App:1", "invalid repository"),
        ("registry.example/app@sha256:xyz", "invalid digest"),
        ("registry.example/app:bad tag", "invalid tag"),
        ("", "empty"),
    ],
)
def test_malformed_references_are_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(InputError, match=says):
        parse_ref(text)


@pytest.mark.parametrize(
    ("text", "loopback"),
    [
        ("localhost:5000/a:1", True),
        ("127.0.0.1:5000/a:1", True),
        ("[::1]:5000/a:1", True),
        ("registry.example/a:1", False),
        ("10.0.0.1:5000/a:1", False),
    ],
)
def test_loopback_hosts_are_recognised_for_implied_plain_http(text: str, loopback: bool) -> None:
    assert parse_ref(text).is_loopback is loopback


# -- objects -----------------------------------------------------------------------------------


def test_malformed_yaml_error_names_the_file_and_line() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n data: [oops\n"
    with pytest.raises(InputError) as error:
        parse_stream(text, "app.yaml")
    assert "app.yaml" in str(error.value)
    assert "line 5" in str(error.value)


def test_a_document_without_kind_is_reported_with_its_place() -> None:
    objects = parse_stream("apiVersion: v1\nmetadata: {name: a}\n", "x.yaml")
    with pytest.raises(InputError, match=r"x.yaml \(object 1\): missing kind"):
        check_objects([(objects[0], "x.yaml (object 1)")])


def test_duplicates_name_both_places() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}}
    with pytest.raises(InputError) as error:
        check_objects([(cm, "one.yaml (object 1)"), (dict(cm), "two.yaml (object 4)")])
    message = str(error.value)
    assert "duplicate object ConfigMap n/a" in message
    assert "one.yaml (object 1)" in message
    assert "two.yaml (object 4)" in message


def test_same_name_in_different_namespaces_or_groups_is_not_a_duplicate() -> None:
    a = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}}
    b = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "m"}}
    c = {
        "apiVersion": "x.example/v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": "n"},
    }
    assert len(check_objects([(a, "1"), (b, "2"), (c, "3")])) == 3


@pytest.mark.parametrize(
    ("obj", "says"),
    [
        ({"kind": "ConfigMap", "metadata": {"name": "a"}}, "missing apiVersion"),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}, "missing metadata.name"),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}},
            "invalid name",
        ),
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "N!"}},
            "invalid namespace",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "a", "labels": {"x": 1}},
            },
            "metadata.labels must map strings to strings",
        ),
    ],
)
def test_invalid_objects_are_refused_naming_the_problem(obj: dict[str, object], says: str) -> None:
    with pytest.raises(InputError, match=says):
        check_objects([(obj, "in.yaml (object 1)")])


def test_list_kinds_are_flattened_and_empty_documents_skipped() -> None:
    text = (
        "---\n---\napiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
        "- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n"
    )
    assert [o["kind"] for o in parse_stream(text, "l.yaml")] == ["ConfigMap", "Secret"]


def test_yaml_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 120)]
    with pytest.raises(InputError, match="aliases"):
        parse_stream("\n".join(lines), "bomb.yaml")


def test_canonical_order_puts_crds_and_namespaces_before_what_uses_them() -> None:
    objs = [
        {
            "apiVersion": "shop.example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": "s"},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "s"},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "s"}},
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.shop.example.com"},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "s"}},
    ]
    kinds = [o["kind"] for o in canonical_order(objs)]
    assert kinds == ["CustomResourceDefinition", "Namespace", "ConfigMap", "Deployment", "Widget"]


def test_canonical_form_does_not_depend_on_input_key_or_object_order() -> None:
    a = {
        "kind": "ConfigMap",
        "data": {"z": "1", "a": "2"},
        "apiVersion": "v1",
        "metadata": {"namespace": "n", "name": "a"},
    }
    b = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "n"},
        "spec": {"ports": [{"port": 80}, {"port": 81}]},
    }
    one = dump_stream(canonical_order(normalise(o) for o in [a, b]))
    two = dump_stream(canonical_order(normalise(o) for o in [b, dict(reversed(list(a.items())))]))
    assert one == two
    first = yaml.safe_load(one.split("---\n")[1])
    assert list(first) == ["apiVersion", "kind", "metadata", "data"]
    assert list(first["data"]) == ["a", "z"]
    # List order is meaning (ports, containers, args) and is kept.
    service = yaml.safe_load(one.split("---\n")[2])
    assert [p["port"] for p in service["spec"]["ports"]] == [80, 81]


def test_object_id_is_group_version_kind_namespace_name() -> None:
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
    }
    assert str(object_id(obj)) == "apps/v1/Deployment/shop/web"
    core = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    assert str(object_id(core)) == "/v1/Namespace//shop"


# -- packaging ---------------------------------------------------------------------------------


def _meta(**changes: object) -> ArtifactMeta:
    fields: dict[str, object] = {
        "title": "app",
        "created": "2024-01-02T03:04:05Z",
        "version": "1.0.0",
        "source_url": "https://git.example/shop.git",
        "revision": "abc",
        "source_path": "deploy",
        "inputs": {"type": "kustomize", "tools": {"kustomize": "v5"}},
        "annotations": {"x": "y"},
    }
    fields.update(changes)
    return ArtifactMeta(**fields)  # type: ignore[arg-type]


STREAM = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"


def test_same_inputs_package_to_the_same_bytes_and_digest() -> None:
    one = package(STREAM, ["/v1/ConfigMap//a"], _meta())
    two = package(STREAM, ["/v1/ConfigMap//a"], _meta())
    assert one.digest == two.digest
    assert [b.data for b in one.blobs] == [b.data for b in two.blobs]
    assert one.manifest.data == two.manifest.data


@pytest.mark.parametrize(
    ("stream", "meta"),
    [
        (STREAM.replace("name: a", "name: b"), _meta()),
        (STREAM, _meta(version="1.0.1")),
        (STREAM, _meta(created="2024-01-02T03:04:06Z")),
        (STREAM, _meta(annotations={"x": "z"})),
        (STREAM, _meta(inventory="web")),
    ],
)
def test_any_change_in_content_or_metadata_changes_the_digest(
    stream: str, meta: ArtifactMeta
) -> None:
    assert (
        package(stream, ["/v1/ConfigMap//a"], meta).digest
        != package(STREAM, ["/v1/ConfigMap//a"], _meta()).digest
    )


def test_the_package_follows_the_v1_format() -> None:
    pkg = package(STREAM, ["/v1/ConfigMap//a"], _meta())
    manifest = json.loads(pkg.manifest.data)
    assert manifest["artifactType"] == LADING_ARTIFACT
    assert manifest["config"]["mediaType"] == LADING_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LADING_CONTENT]
    assert manifest["annotations"]["org.opencontainers.image.created"] == "2024-01-02T03:04:05Z"
    assert (
        manifest["annotations"]["org.opencontainers.image.source"] == "https://git.example/shop.git"
    )
    assert manifest["annotations"]["org.opencontainers.image.revision"] == "abc"
    assert manifest["annotations"]["org.opencontainers.image.version"] == "1.0.0"
    assert manifest["annotations"]["x"] == "y"
    config = json.loads(pkg.blobs[0].data)
    assert config["objects"] == {"count": 1, "ids": ["/v1/ConfigMap//a"]}
    assert config["source"] == {
        "url": "https://git.example/shop.git",
        "revision": "abc",
        "path": "deploy",
    }
    assert config["checksum"].startswith("sha256:")


def test_the_layer_tar_and_gzip_carry_no_times_owners_or_names() -> None:
    layer = package(STREAM, ["/v1/ConfigMap//a"], _meta()).blobs[1].data
    # gzip header: bytes 4-7 are MTIME, and flag bit 3 (FNAME) says a file name follows.
    assert layer[4:8] == b"\0\0\0\0"
    assert not layer[3] & 0x08
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        (member,) = tar.getmembers()
        assert (
            member.name,
            member.mtime,
            member.uid,
            member.gid,
            member.uname,
            member.gname,
            member.mode,
        ) == (CONTENT_FILE, 0, 0, 0, "", "", 0o644)
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert extracted.read().decode() == STREAM


# -- source detection --------------------------------------------------------------------------

COMMIT_EPOCH = 1_700_000_000


def _git(cwd: Path, *args: str, epoch: int = COMMIT_EPOCH) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_AUTHOR_DATE": f"@{epoch} +0000",
        "GIT_COMMITTER_DATE": f"@{epoch} +0000",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo = tmp_path / "repo"
    (repo / "deploy" / "prod").mkdir(parents=True)
    (repo / "deploy" / "prod" / "kustomization.yaml").write_text("resources: []\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "remote", "add", "origin", "https://ci-bot:s3cr3t-token@git.example/shop/config.git")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def test_git_source_detection_redacts_credentials_and_uses_the_commit_time(git_repo: Path) -> None:
    facts = detect(git_repo / "deploy" / "prod", SourceMetadata())
    assert facts.url == "https://git.example/shop/config.git"
    assert "s3cr3t" not in repr(facts)
    assert facts.revision == _git(git_repo, "rev-parse", "HEAD")
    assert facts.path == "deploy/prod"
    assert facts.created == "2023-11-14T22:13:20Z"  # COMMIT_EPOCH


def test_git_facts_are_the_same_whether_the_commands_start_together_or_one_after_another(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = git_repo / "deploy" / "prod"
    (source / "kustomization.yaml").write_text("resources: []\n# edited\n")
    together = detect(source, SourceMetadata())
    # A work tree git finds that the .git lookup does not see: the rest are asked after.
    monkeypatch.setattr(source_module, "_in_a_repository", lambda where: False)
    assert detect(source, SourceMetadata()) == together
    assert together.dirty
    outside = tmp_path / "outside"
    outside.mkdir()
    assert detect(outside, SourceMetadata()).revision is None


def test_uncommitted_changes_under_the_source_mark_the_build_dirty(git_repo: Path) -> None:
    source = git_repo / "deploy" / "prod"
    assert not detect(source, SourceMetadata()).dirty
    (git_repo / "elsewhere.txt").write_text("outside the source")
    assert not detect(source, SourceMetadata()).dirty
    (source / "kustomization.yaml").write_text("resources: []\n# edited\n")
    assert detect(source, SourceMetadata()).dirty
    # A revision the caller names explicitly is taken at its word.
    assert not detect(source, SourceMetadata(revision="abc")).dirty


def test_a_dirty_flag_is_recorded_in_the_config_and_clean_builds_keep_their_digest() -> None:
    clean = package("---\n", [], _meta())
    assert package("---\n", [], _meta(dirty=False)).digest == clean.digest
    dirty = package("---\n", [], _meta(dirty=True))
    assert dirty.digest != clean.digest
    assert json.loads(dirty.blobs[0].data)["source"]["dirty"] is True
    assert "dirty" not in json.loads(clean.blobs[0].data)["source"]


def test_source_date_epoch_wins_over_the_commit_time(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    assert detect(git_repo, SourceMetadata()).created == "1970-01-02T00:00:00Z"


def test_plan_metadata_overrides_what_git_says_and_is_redacted_too(git_repo: Path) -> None:
    first = _git(git_repo, "rev-parse", "HEAD")
    (git_repo / "x").write_text("x")
    _git(git_repo, "add", "x")
    _git(git_repo, "commit", "-q", "-m", "second", epoch=COMMIT_EPOCH + 3600)
    facts = detect(
        git_repo,
        SourceMetadata(url="https://u:p@mirror.example/c.git", revision=first, path="elsewhere"),
    )
    assert (facts.url, facts.revision, facts.path) == (
        "https://mirror.example/c.git",
        first,
        "elsewhere",
    )
    # created follows the revision the plan names, not HEAD.
    assert facts.created == "2023-11-14T22:13:20Z"


def test_outside_git_without_source_date_epoch_created_is_the_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    facts = detect(tmp_path, SourceMetadata())
    assert (facts.url, facts.revision, facts.created) == (None, None, "1970-01-01T00:00:00Z")


def test_a_malformed_source_date_epoch_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InputError, match="SOURCE_DATE_EPOCH"):
        detect(tmp_path, SourceMetadata())


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:tok@host/x.git", "https://host/x.git"),
        ("https://tok@host:8443/x.git", "https://host:8443/x.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
    ],
)
def test_redact_url_drops_userinfo(url: str, clean: str) -> None:
    assert redact_url(url) == clean


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://u:p@ss@host/x", "https://host/x"),  # an unescaped @ in the password
        ("ssh://git@host/x.git", "ssh://host/x.git"),
        ("deploy:s3cr3t@host:org/x.git", "host:org/x.git"),  # scp-like, with a password
        ("https://h/x?access_token=t&ref=main", "https://h/x?ref=main"),
        ("https://h/x?ref=a%2Fb&TOKEN=t", "https://h/x?ref=a%2Fb"),  # kept byte for byte
        ("https://gitlab.example/g/r.git?private_token=t", "https://gitlab.example/g/r.git"),
        (
            "https://s3.example/b/k?X-Amz-Signature=s&X-Amz-Credential=c&v=1",
            "https://s3.example/b/k?v=1",
        ),
        ("https://blob.example/c?sv=2024&sig=s", "https://blob.example/c?sv=2024"),
        ("https://h/x?password=p&client_secret=c&api_key=k&key=k&sig=s", "https://h/x"),
        ("https://h/x#access_token=t", "https://h/x"),
        ("https://h/x?monkey=1#main", "https://h/x?monkey=1#main"),
        ("https://h/path/with@sign", "https://h/path/with@sign"),
    ],
)
def test_redact_url_drops_credentials_and_token_like_parameters(url: str, clean: str) -> None:
    assert redact_url(url) == clean


# -- inventory names and workspaces ------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("registry.example/team/app:1", "app"),
        ("registry.example:5000/app@sha256:" + "ab" * 32, "app"),
        ("registry.example/team/my_app.v2:1", "my-app-v2"),
        ("oci-layout:/carry/Shop_Web:v1", "shop-web"),
        ("/carry/bundle.tar:v1", "bundle"),
        ("oci-layout:/carry/" + "a" * 60 + "-b", "a" * 53),
    ],
)
def test_the_default_inventory_is_the_destinations_last_path_component(ref: str, name: str) -> None:
    assert default_inventory(parse_ref(ref)) == name


def test_a_destination_that_makes_no_inventory_name_asks_for_one() -> None:
    with pytest.raises(InputError, match="--inventory NAME"):
        default_inventory(parse_ref("oci-layout:/carry/___:v1"))


def test_confine_resolves_relative_paths_and_refuses_what_leads_out(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "sub").mkdir(parents=True)
    (workspace / "inside").symlink_to(workspace / "sub")
    (workspace / "out").symlink_to(tmp_path)
    assert confine("sub/../a.yaml", workspace, "f") == workspace / "a.yaml"
    assert confine("inside/a.yaml", workspace, "f") == workspace / "sub" / "a.yaml"
    assert confine(workspace / "new" / "dir", workspace, "f") == workspace / "new" / "dir"
    assert confine("a.yaml", workspace, "f", base=workspace / "sub") == workspace / "sub" / "a.yaml"
    for path in ("../a.yaml", "/etc/passwd", "out/a.yaml", "sub/../../a.yaml"):
        with pytest.raises(InputError, match=r"^to\[2\]: .* leads outside the workspace"):
            confine(path, workspace, "to[2]")


def test_a_symlink_loop_is_refused_not_followed(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(InputError, match="cannot resolve"):
        confine("a/x.yaml", tmp_path, "source.inline.files[0]")
    with pytest.raises(InputError, match="cannot resolve"):
        refuse_escaping_links(tmp_path, "source.kustomize.path")

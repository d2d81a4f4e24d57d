"""BuildPlan and BuildResult: what a control plane sends the build runner, and gets back."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from plans.app import App
from plans.common import API_VERSION, Result, Strict

# The inventory name becomes the name of a Secret or ConfigMap and part of a Lease's name, so it
# is a DNS-1123 label with room left for the suffixes lading adds.
INVENTORY_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
INVENTORY_MAX = 53


class InlineSource(Strict):
    """Manifests given directly: files, YAML text, or both. Built as an implicit kustomization
    with them as resources, so every source flows through kustomize."""

    files: list[str] = Field(default_factory=list, description="manifest files (YAML)")
    manifests: str | None = Field(default=None, description="YAML text, one or more documents")

    @model_validator(mode="after")
    def _not_empty(self) -> InlineSource:
        if not self.files and not self.manifests:
            raise ValueError("inline needs `files` or `manifests`")
        return self


class PatchTarget(Strict):
    group: str | None = None
    version: str | None = None
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None
    labelSelector: str | None = None
    annotationSelector: str | None = None


class Patch(Strict):
    """A kustomize patch (strategic merge or JSON 6902), inline."""

    patch: str
    target: PatchTarget | None = None


class ImageOverride(Strict):
    """A kustomize `images:` entry."""

    name: str
    newName: str | None = None
    newTag: str | None = None
    digest: str | None = None


class KustomizeSource(Strict):
    path: str = Field(description="directory holding a kustomization.yaml")
    enable_helm: bool = Field(default=False, description="inflate helmCharts (runs helm)")
    load_restrictor: Literal["rootOnly", "none"] = Field(
        default="rootOnly", description="kustomize --load-restrictor"
    )
    patches: list[Patch] = Field(default_factory=list)
    images: list[ImageOverride] = Field(default_factory=list)


class ArtifactSource(Strict):
    """Bring your own artifact: copied unchanged (same digest) to the destination."""

    ref: str


class AppSource(Strict):
    """An App spec (plans/app.py) the objects are generated from: a file, or the spec itself.
    Paths inside the spec are relative to its file (to the plan for `spec`)."""

    file: str | None = Field(default=None, description="App spec file (YAML/JSON)")
    spec: App | None = Field(default=None, description="the App spec, inline")

    @model_validator(mode="after")
    def _exactly_one(self) -> AppSource:
        if (self.file is None) == (self.spec is None):
            raise ValueError("give exactly one of app.file, app.spec")
        return self


class ComposeSource(Strict):
    """A compose file whose services are translated into Kubernetes objects."""

    file: str = Field(description="compose file (compose.yaml)")
    services: list[str] = Field(
        default_factory=list, description="services to build (default: all without a profile)"
    )
    env_files: list[str] = Field(
        default_factory=list,
        description="env files for interpolation (default: the .env next to the compose file)",
    )
    strict: bool = Field(
        default=False, description="refuse the build when anything cannot be translated"
    )


SOURCE_KINDS = ("inline", "kustomize", "artifact", "app", "compose")


class Source(Strict):
    inline: InlineSource | None = None
    kustomize: KustomizeSource | None = None
    artifact: ArtifactSource | None = None
    app: AppSource | None = None
    compose: ComposeSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        given = [n for n in SOURCE_KINDS if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of " + ", ".join(f"source.{n}" for n in SOURCE_KINDS)
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class SourceMetadata(Strict):
    """Where the configuration came from. Detected from git when unset."""

    url: str | None = None
    revision: str | None = None
    path: str | None = None


class BuildPlan(Strict):
    apiVersion: Literal["lading.dev/v1"] = "lading.dev/v1"
    kind: Literal["BuildPlan"] = "BuildPlan"
    source: Source
    to: list[str] = Field(
        min_length=1,
        description="destination references: "
        "registry/repo:tag (one per tag), oci-layout:DIR[:tag], FILE.tar, or "
        "git:REPO[#BRANCH][:DIR] (the manifests committed to a Git repository for GitOps)",
    )
    check_reproducible: bool = Field(
        default=False,
        description="render twice and fail, naming the objects, when the digests differ",
    )
    version: str | None = Field(default=None, description="artifact version (semver or any)")
    inventory: str | None = Field(
        default=None,
        pattern=INVENTORY_NAME,
        max_length=INVENTORY_MAX,
        description="inventory name recorded in the artifact, the install's default "
        "(default: the first destination's last path component, `app` for "
        "registry.example/team/app)",
    )
    metadata: SourceMetadata = Field(default_factory=SourceMetadata)
    annotations: dict[str, str] = Field(
        default_factory=dict, description="extra manifest annotations"
    )
    plain_http: bool = False
    ca_file: str | None = None
    sign: bool = Field(
        default=False,
        description="sign every pushed reference keylessly with "
        "Sigstore (identity token from SIGSTORE_ID_TOKEN or the CI system)",
    )
    sign_trust_config: str | None = Field(
        default=None, description="client trust config of a private Sigstore instance"
    )


class SourceInfo(Result):
    url: str | None = None
    revision: str | None = None
    path: str | None = None
    created: str
    dirty: bool = Field(
        default=False,
        description="built from uncommitted changes: the revision does not describe the content",
    )


class Untranslated(Result):
    """Something in a compose file that has no Kubernetes form, left out of the artifact."""

    service: str | None = Field(default=None, description="none for a top-level field")
    field: str
    reason: str


class GitCommit(Result):
    """What a git: destination received."""

    repo: str = Field(description="the repository, without credentials")
    branch: str
    dir: str
    commit: str = Field(description="the commit holding this digest's manifests")
    changed: bool = Field(description="false when the branch already held this digest")


class BuildResult(Result):
    apiVersion: str = API_VERSION
    kind: Literal["BuildResult"] = "BuildResult"
    digest: str
    ref: str = Field(
        description="pinned reference repo@sha256:… of the first destination "
        "(git:REPO#BRANCH:DIR@COMMIT for a Git destination)"
    )
    refs: list[str] = Field(description="pinned reference of every destination")
    tags: list[str]
    size: int = Field(description="manifest + config + layer bytes")
    objects: int
    source: SourceInfo
    version: str | None = None
    inventory: str | None = Field(
        default=None,
        description="inventory name recorded in the artifact (none for a copied artifact "
        "that records none)",
    )
    checksum: str | None = None
    copied: bool = Field(default=False, description="true when an existing artifact was copied")
    untranslated: list[Untranslated] = Field(
        default_factory=list, description="compose features left out (see --strict)"
    )
    git: list[GitCommit] = Field(default_factory=list, description="git: destinations")
    reproducible: bool | None = Field(
        default=None, description="set by check_reproducible: two renders gave one digest"
    )
    signed: list[str] = Field(default_factory=list, description="pinned references signed")
    durations: dict[str, float] = Field(default_factory=dict)

"""BuildPlan and BuildResult: what a control plane sends the build runner, and gets back."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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


class Source(Strict):
    inline: InlineSource | None = None
    kustomize: KustomizeSource | None = None
    artifact: ArtifactSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        given = [n for n in ("inline", "kustomize", "artifact") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of source.inline, source.kustomize, source.artifact"
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
        "registry/repo:tag (one per tag), oci-layout:DIR[:tag] or FILE.tar",
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


class BuildResult(Result):
    apiVersion: str = API_VERSION
    kind: Literal["BuildResult"] = "BuildResult"
    digest: str
    ref: str = Field(description="pinned reference repo@sha256:… of the first destination")
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
    signed: list[str] = Field(default_factory=list, description="pinned references signed")
    durations: dict[str, float] = Field(default_factory=dict)

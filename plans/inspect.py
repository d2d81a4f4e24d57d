"""InspectResult: what `lading inspect` reports about an artifact."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from plans.common import API_VERSION, Result


class Referrer(Result):
    """A manifest whose `subject` is the inspected artifact: a signature, an SBOM…"""

    digest: str
    media_type: str
    artifact_type: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class Layer(Result):
    digest: str
    media_type: str
    size: int
    title: str | None = None


class InspectResult(Result):
    apiVersion: str = API_VERSION
    kind: Literal["InspectResult"] = "InspectResult"
    ref: str = Field(description="pinned reference repo@sha256:…")
    digest: str
    media_type: str
    artifact_type: str | None = None
    format: Literal["lading", "flux", "tar", "yaml"] = Field(
        description="how the manifests are packed: lading v1, Flux, or a (gzipped) tar of YAML"
    )
    size: int = Field(description="manifest + config + layer bytes")
    annotations: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="lading's config (version, created, source, inputs, checksum); "
        "empty for foreign artifacts",
    )
    layers: list[Layer] = Field(default_factory=list)
    objects: list[str] = Field(description="object ids group/version/Kind/namespace/name")
    referrers: list[Referrer] | None = Field(
        default=None, description="None when the store could not list them"
    )
    referrers_note: str | None = None

"""InstallPlan and InstallResult; DiffResult. The install runner's control-plane contract."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plans.common import Result, Strict
from plans.supply import SignaturePolicy

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """`90s`, `5m`, `1h30m`, or plain seconds → seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION.match(text)
    if not text or not match:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 5m or 1h30m")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


class ArtifactSpec(Strict):
    ref: str = Field(description="registry/repo@sha256:…, oci-layout:DIR@sha256:… or FILE.tar@…")
    allow_tag: bool = Field(
        default=False,
        description="accept a tag; it is resolved once and "
        "the digest is what gets installed and reported",
    )
    plain_http: bool = False
    ca_file: str | None = None


class TargetSpec(Strict):
    """Which cluster. One of: kubeconfig (+context), in_cluster, or server (+ca_file, token)."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    server: str | None = None
    ca_file: str | None = None
    token: SecretStr | None = Field(default=None, description="bearer token; never logged")
    token_file: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> TargetSpec:
        ways = [bool(self.kubeconfig or self.context), self.in_cluster, bool(self.server)]
        if sum(ways) > 1:
            raise ValueError("give one of kubeconfig/context, in_cluster, or server")
        if (self.token or self.token_file) and not self.server:
            raise ValueError("token and token_file go with server")
        return self


class InstallPlan(Strict):
    apiVersion: Literal["lading.dev/v1"] = "lading.dev/v1"
    kind: Literal["InstallPlan"] = "InstallPlan"
    artifact: ArtifactSpec
    target: TargetSpec = Field(default_factory=TargetSpec)
    namespace: str | None = Field(
        default=None,
        description="for namespaced objects without one; also where the inventory lives",
    )
    create_namespace: bool = False
    field_manager: str = "lading"
    inventory: str | None = Field(
        default=None, description="default: the repository's last path component"
    )
    prune: bool = True
    allow_empty: bool = Field(
        default=False, description="let an empty artifact prune everything the inventory holds"
    )
    wait: bool = True
    timeout: str = Field(default="5m", description="wait timeout, e.g. 90s, 5m")
    force_conflicts: bool = False
    take_ownership: list[str] = Field(
        default_factory=list,
        description="field managers whose fields lading may take over (prefix match), "
        "e.g. kubectl, helm, before-first-apply",
    )
    recreate_on_immutable: bool = Field(
        default=False, description="delete and recreate objects whose immutable fields change"
    )
    recreate: list[str] = Field(
        default_factory=list,
        description="object ids (Kind/name or "
        "group/version/Kind/namespace/name) that may be recreated",
    )
    dry_run: bool = False
    concurrency: int = Field(default=8, ge=1, le=64)
    verify: SignaturePolicy | None = Field(
        default=None,
        description="refuse the artifact, before anything is written, unless a Sigstore "
        "signature of its digest by this identity verifies offline",
    )

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)


Action = Literal["created", "configured", "unchanged", "deleted", "skipped", "failed"]


class Change(Result):
    id: str
    action: Action
    error: str | None = None
    stage: str | None = None


class InstallResult(Result):
    apiVersion: str = "lading.dev/v1"
    kind: Literal["InstallResult"] = "InstallResult"
    operation: Literal["install", "uninstall", "rollback"] = "install"
    digest: str | None
    ref: str | None
    inventory: str
    namespace: str
    status: Literal["succeeded", "failed"]
    dry_run: bool = False
    changes: list[Change] = Field(default_factory=list)
    summary: dict[str, int] = Field(default_factory=dict)
    durations: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    previous_digest: str | None = None


class FieldDiff(Result):
    path: str
    want: object = None
    have: object = None


class ObjectDrift(Result):
    id: str
    state: Literal["in-sync", "drifted", "missing"]
    fields: list[FieldDiff] = Field(default_factory=list)
    diff: str | None = Field(default=None, description="unified diff, live → artifact")


class DiffResult(Result):
    apiVersion: str = "lading.dev/v1"
    kind: Literal["DiffResult"] = "DiffResult"
    digest: str
    ref: str
    in_sync: bool
    objects: list[ObjectDrift]

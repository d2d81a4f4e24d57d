"""InstallPlan and InstallResult; DiffResult. The install runner's control-plane contract."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from plans.common import Result, Strict
from plans.supply import SignaturePolicy

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", re.ASCII)


# A wait longer than a day is a mistake, and far larger values overflow the timers they feed.
MAX_DURATION = 24 * 3600
# Namespaces are DNS-1123 labels; checking here gives exit 2 and the rule instead of the API
# server's "could not find the requested resource".
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")


def parse_duration(text: str) -> float:
    """`90s`, `5m`, `1h30m`, or plain seconds → seconds; from 0 to a day."""
    text = text.strip()
    match = _DURATION.fullmatch(text)
    if match and text:
        hours, minutes, seconds = match.groups()
        value = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
    elif re.fullmatch(r"\d+(?:\.\d+)?", text, re.ASCII):
        value = float(text)
    else:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 5m or 1h30m")
    if value > MAX_DURATION:
        raise ValueError(f"duration {text!r} is longer than a day")
    return value


def check_namespace(value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"invalid namespace {value!r}: a namespace is a DNS-1123 label (at most 63 "
            "lowercase letters, digits and '-', starting and ending with a letter or digit)"
        )
    return value


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
    adopt: list[str] = Field(
        default_factory=list,
        description="objects another owner holds (another inventory or ApplySet, a Helm "
        "release, a Flux Kustomization) that this install may take over: Kind/name, "
        "Kind/namespace/name, a shell pattern, or `all`; each adoption is recorded",
    )
    allow_namespaces: list[str] = Field(
        default_factory=list,
        description="namespaces besides `namespace` (and those the artifact creates) that "
        "objects may name; shell patterns, `*` for any",
    )
    allow_data_loss: bool = Field(
        default=False,
        description="let prune and uninstall delete a CRD that still has custom resources, "
        "or a Namespace that still holds objects this inventory did not install",
    )
    dry_run: bool = False
    concurrency: int = Field(
        default=128, ge=1, le=256,
        description="requests in flight at most; the writes keep 32 plus one per millisecond "
        "of the quickest request in flight (more would only queue at the API server), and "
        "fewer while it throttles (429)",
    )
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

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        return value if value is None else check_namespace(value)

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)


Action = Literal["created", "configured", "unchanged", "deleted", "skipped", "failed"]


class Change(Result):
    id: str
    action: Action
    error: str | None = None
    stage: str | None = None
    reason: str | None = Field(
        default=None, description="why an object was skipped or kept (e.g. prune disabled)"
    )


class Adoption(Result):
    id: str
    owner: str = Field(description="who held the object before, e.g. Helm release ns/name")


class Refusal(Result):
    id: str
    reason: str


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
    adopted: list[Adoption] = Field(
        default_factory=list, description="objects taken over from another owner, as asked"
    )
    refused: list[Refusal] = Field(
        default_factory=list,
        description="why preflight refused the install (ownership, namespace scope, "
        "data loss, control objects); nothing was written",
    )
    cluster_scoped: list[str] = Field(
        default_factory=list, description="ids of the cluster-scoped objects in the artifact"
    )


class FieldDiff(Result):
    path: str
    want: object = None
    have: object = None


class ObjectDrift(Result):
    id: str
    state: Literal["in-sync", "drifted", "missing", "pruned"] = Field(
        description="pruned: a member of the inventory the artifact no longer holds"
    )
    fields: list[FieldDiff] = Field(default_factory=list)
    diff: str | None = Field(default=None, description="unified diff, live → artifact")
    error: str | None = Field(
        default=None, description="why the object could not be compared (the server's answer)"
    )


class DiffResult(Result):
    apiVersion: str = "lading.dev/v1"
    kind: Literal["DiffResult"] = "DiffResult"
    digest: str
    ref: str
    in_sync: bool
    objects: list[ObjectDrift]

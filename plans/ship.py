"""The Temporal contract: what the `run` and `ship` workflows take and return, and the inputs of
the `verify` and `sign` activities.

A worker registers activities named `build`, `install`, `diff`, `uninstall`, `rollback`,
`verify` and `sign`. Each takes one plan document (BuildPlan, InstallPlan, VerifyPlan, SignPlan)
and returns one result document (BuildResult, InstallResult, DiffResult, VerifyResult,
SignResult), as JSON, so a control plane in any language calls them by name. Two workflows
come with the worker: `run` runs one activity (`lading submit -f PLAN`), `ship` builds,
verifies and installs into environments in order.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from plans.build import BuildPlan, BuildResult
from plans.common import API_VERSION, Result, Strict
from plans.install import InstallPlan, InstallResult, check_namespace, parse_duration
from plans.supply import SignaturePolicy, VerifyResult

ActivityName = Literal["build", "install", "diff", "uninstall", "rollback", "verify", "sign"]
ACTIVITIES: tuple[ActivityName, ...] = (
    "build", "install", "diff", "uninstall", "rollback", "verify", "sign",
)
# The plan kind each activity takes: a control plane sends the same documents `lading run` reads.
PLAN_KINDS: dict[ActivityName, str] = {
    "build": "BuildPlan",
    "install": "InstallPlan",
    "diff": "InstallPlan",
    "uninstall": "InstallPlan",
    "rollback": "InstallPlan",
    "verify": "VerifyPlan",
    "sign": "SignPlan",
}
# ApplicationError types a failed activity or workflow carries; all but RemoteError are final.
FAILURE_TYPES = ("InputError", "RemoteError", "OperationFailed", "InstallFailed", "Cancelled",
                 "ShipFailed")
NON_RETRYABLE = ("InputError", "OperationFailed", "InstallFailed", "Cancelled", "ShipFailed")


class ActivityOptions(Strict):
    """How the workflow schedules each activity."""

    heartbeat_timeout: str = Field(
        default="30s",
        description="a worker silent this long is presumed dead and the activity retried "
        "elsewhere; workers heartbeat every third of it",
    )
    start_to_close_timeout: str = Field(default="1h", description="one attempt's limit")
    initial_interval: str = Field(default="1s", description="first retry backoff")
    maximum_interval: str = Field(default="1m", description="longest retry backoff")
    maximum_attempts: int = Field(
        default=10, ge=0, description="attempts for retryable failures (0: unlimited)"
    )

    @field_validator(
        "heartbeat_timeout", "start_to_close_timeout", "initial_interval", "maximum_interval"
    )
    @classmethod
    def _durations(cls, value: str) -> str:
        parse_duration(value)
        return value

    def seconds(self, name: str) -> float:
        return parse_duration(str(getattr(self, name)))


class VerifyPlan(Strict):
    """Input of the `verify` activity: who must have signed the artifact."""

    apiVersion: Literal["lading.dev/v1"] = "lading.dev/v1"
    kind: Literal["VerifyPlan"] = "VerifyPlan"
    ref: str = Field(description="registry/repo@sha256:… (or :tag, resolved once)")
    policy: SignaturePolicy
    plain_http: bool = False
    ca_file: str | None = None


class SignPlan(Strict):
    """Input of the `sign` activity. The identity token is never in the plan: the worker reads
    it from its own environment."""

    apiVersion: Literal["lading.dev/v1"] = "lading.dev/v1"
    kind: Literal["SignPlan"] = "SignPlan"
    ref: str
    identity_token_env: str = Field(
        default="SIGSTORE_ID_TOKEN",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable of the worker holding the OIDC identity token "
        "(unset: the CI system's ambient credential)",
    )
    trust_config: str | None = Field(
        default=None, description="client trust config of a private Sigstore instance"
    )
    plain_http: bool = False
    ca_file: str | None = None


class RunRequest(Strict):
    """Input of the `run` workflow: one activity, one plan."""

    apiVersion: Literal["lading.dev/v1"] = "lading.dev/v1"
    kind: Literal["RunRequest"] = "RunRequest"
    activity: ActivityName
    plan: dict[str, Any] = Field(description="the plan document the activity takes")
    task_queue: str | None = Field(
        default=None, description="queue of the workers that may run it (default: the "
        "workflow's own)"
    )
    options: ActivityOptions = Field(default_factory=ActivityOptions)

    @model_validator(mode="after")
    def _kind_fits(self) -> RunRequest:
        want = PLAN_KINDS[self.activity]
        if self.plan.get("kind") != want:
            raise ValueError(
                f"activity {self.activity} takes a {want}, not {self.plan.get('kind')!r}"
            )
        return self


class Environment(Strict):
    """One install target of a ship, in order."""

    name: str = Field(description="a DNS label, e.g. staging, prod-eu")
    task_queue: str | None = Field(
        default=None,
        description="queue polled by the workers that reach this environment's cluster "
        "(default: the workflow's own)",
    )
    approval: bool = Field(
        default=False, description="wait for an `approve` signal naming this environment first"
    )
    install: InstallPlan = Field(
        description="how to install here; `artifact.ref` names the repository this "
        "environment pulls from, and the ship pins it to the shipped digest"
    )
    rollback_on_failure: bool = Field(
        default=True,
        description="when the install fails after writing (apply or wait), reinstall the "
        "digest the inventory held before",
    )

    @field_validator("name")
    @classmethod
    def _label(cls, value: str) -> str:
        return check_namespace(value)


class ShipPlan(Strict):
    """Input of the `ship` workflow: build (or take) one artifact, verify it, install it into
    each environment in order."""

    apiVersion: Literal["lading.dev/v1"] = "lading.dev/v1"
    kind: Literal["ShipPlan"] = "ShipPlan"
    build: BuildPlan | None = Field(default=None, description="build the artifact first")
    artifact: str | None = Field(
        default=None, description="or ship this existing artifact: registry/repo@sha256:…"
    )
    verify: SignaturePolicy | None = Field(
        default=None, description="verify the artifact's signature before the first install"
    )
    environments: list[Environment] = Field(min_length=1)
    options: ActivityOptions = Field(default_factory=ActivityOptions)

    @model_validator(mode="after")
    def _what_to_ship(self) -> ShipPlan:
        if (self.build is None) == (self.artifact is None):
            raise ValueError("give exactly one of build and artifact")
        if self.artifact is not None and "@sha256:" not in self.artifact:
            raise ValueError("artifact must be pinned: registry/repo@sha256:…")
        names = [e.name for e in self.environments]
        if len(set(names)) != len(names):
            raise ValueError("environment names must be unique")
        return self


EnvironmentStatus = Literal["succeeded", "failed", "rolled-back", "rejected", "skipped"]


class EnvironmentResult(Result):
    name: str
    status: EnvironmentStatus
    install: InstallResult | None = None
    rollback: InstallResult | None = Field(
        default=None, description="the rollback's result, when the install failed after writing"
    )
    error: str | None = None


class ShipResult(Result):
    apiVersion: str = API_VERSION
    kind: Literal["ShipResult"] = "ShipResult"
    status: Literal["succeeded", "failed"]
    digest: str | None = None
    ref: str | None = None
    build: BuildResult | None = None
    verify: VerifyResult | None = None
    environments: list[EnvironmentResult] = Field(default_factory=list)
    error: str | None = None


class Submission(Result):
    """What `lading submit` prints: where the workflow runs and, with --wait, how it ended."""

    apiVersion: str = API_VERSION
    kind: Literal["Submission"] = "Submission"
    workflow: Literal["run", "ship"]
    workflow_id: str
    run_id: str | None = None
    namespace: str
    task_queue: str
    status: Literal["started", "succeeded", "failed", "cancelled"] = "started"
    result: dict[str, Any] | None = Field(
        default=None, description="the result document (ShipResult, InstallResult, …)"
    )
    error: str | None = None

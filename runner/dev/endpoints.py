"""What a caller needs to reach a cluster or a registry of the local environment.

The same values come out of `lading dev up` (recorded in the state file), the pytest fixtures
and their overrides (`LADING_TEST_KUBECONFIG`, `LADING_TEST_REGISTRY`, testcontainers), so
code under test never cares which provider started the servers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

Provider = Literal["local", "env", "testcontainers"]

# The pod annotation the rollout cluster's kwok stage reacts to (see kwok-stages.yaml).
FAULT_ANNOTATION = "testbed.lading.dev/fault"
CRASH_LOOP = "crash-loop"


class ClusterEndpoint(BaseModel):
    """A Kubernetes API server and an admin kubeconfig for it."""

    model_config = ConfigDict(frozen=True)

    kubeconfig: Path
    server: str
    context: str | None = None
    # The kwok-managed node pods are scheduled to; None when nothing runs pods (no rollout
    # components) or when the cluster is not ours (override, k3s) and has no kwok stages.
    fake_node: str | None = None
    rollout: bool = False
    provider: Provider = "local"
    startup_seconds: float = 0.0

    def api_client(self) -> ApiClient:
        """A fresh client of the official `kubernetes` package for this cluster."""
        from kubernetes import config

        client: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), context=self.context
        )
        return client

    @property
    def fault_stages(self) -> bool:
        """Whether pods annotated with FAULT_ANNOTATION are driven into failure states."""
        return self.fake_node is not None


class RegistryEndpoint(BaseModel):
    """An OCI registry: `host` is `host:port`, as in an image reference."""

    model_config = ConfigDict(frozen=True)

    host: str
    tls: bool = False
    ca_file: Path | None = None
    username: str | None = None
    # Never written to the state file or shown in a repr; read from `credentials_file`.
    password: SecretStr | None = Field(default=None, exclude=True)
    credentials_file: Path | None = None
    docker_config: Path | None = None
    referrers: bool = False
    provider: Provider = "local"
    startup_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def with_password_from_file(self) -> RegistryEndpoint:
        """This endpoint with `password` filled in from `credentials_file` (mode 0600 JSON)."""
        import json

        if self.credentials_file is None:
            return self
        data = json.loads(self.credentials_file.read_text())
        return self.model_copy(update={"password": SecretStr(data["password"])})


class TemporalEndpoint(BaseModel):
    """A Temporal frontend: `address` is host:port for gRPC clients (TEMPORAL_ADDRESS)."""

    model_config = ConfigDict(frozen=True)

    address: str
    http: str | None = None
    namespace: str = "default"
    provider: Provider = "local"
    startup_seconds: float = 0.0

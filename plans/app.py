"""The App spec: one application's configuration, from which `lading build --app` generates its
Kubernetes objects (the Orbit generator's shape: core objects always, optional ones when on).

    Deployment, Service                         always
    ConfigMap                                   config_map: true (the non-secret `env`)
    Secret | ExternalSecret | SealedSecret      secret: (by strategy)
    Ingress (+ cert-manager TLS)                ingress:
    HorizontalPodAutoscaler                     autoscaling:
    PersistentVolumeClaim                       volume:

Paths the spec names (a sealing certificate, files holding secret values) are relative to the
spec's own file and must stay inside its directory.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, model_validator

from plans.common import Strict

# A DNS-1123 label short enough for the suffixes the generator adds (`-config`, `-secret`,
# `-data`, `-tls`).
APP_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
APP_NAME_MAX = 52
# IANA service names, as Kubernetes validates container port names (it also wants a letter and
# no "--", checked apart: pydantic's patterns have no look-ahead).
PORT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PORT_NAME_MAX = 15
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"


class AppPort(Strict):
    name: str = Field(
        pattern=PORT_NAME,
        max_length=PORT_NAME_MAX,
        description="port name: lowercase letters, digits and '-', at most 15 characters",
    )
    port: int = Field(ge=1, le=65535, description="the Service's port")
    container_port: int | None = Field(
        default=None, ge=1, le=65535, description="the container's port (default: `port`)"
    )
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"

    @model_validator(mode="after")
    def _iana_name(self) -> AppPort:
        if "--" in self.name or not re.search("[a-z]", self.name):
            raise ValueError(f"port name {self.name!r} needs a letter and no '--'")
        return self


class Probe(Strict):
    """An HTTP GET when `path` is set, a command when `command` is, else a TCP connect."""

    path: str | None = Field(default=None, description="HTTP GET path, e.g. /healthz")
    command: list[str] | None = Field(default=None, description="command run in the container")
    port: str | int | None = Field(
        default=None, description="port name or number (default: the first port)"
    )
    initial_delay_seconds: int = Field(default=0, ge=0)
    period_seconds: int = Field(default=10, ge=1)
    timeout_seconds: int = Field(default=1, ge=1)
    failure_threshold: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Probe:
        if self.path is not None and self.command is not None:
            raise ValueError("give `path` (HTTP) or `command` (exec), not both")
        return self


class Probes(Strict):
    readiness: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None


class Resources(Strict):
    requests: dict[str, str] = Field(default_factory=dict, description="e.g. {cpu: 100m}")
    limits: dict[str, str] = Field(default_factory=dict, description="e.g. {memory: 256Mi}")


class Service(Strict):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"


class IngressTLS(Strict):
    """TLS from cert-manager: the issuer annotation makes cert-manager fill `secret_name`."""

    issuer: str = Field(description="the cert-manager issuer's name")
    issuer_kind: Literal["ClusterIssuer", "Issuer"] = "ClusterIssuer"
    secret_name: str | None = Field(default=None, description="default: <name>-tls")


class Ingress(Strict):
    host: str
    path: str = "/"
    path_type: Literal["Prefix", "Exact", "ImplementationSpecific"] = "Prefix"
    ingress_class: str | None = Field(default=None, description="ingressClassName, e.g. nginx")
    port: str | None = Field(default=None, description="the port's name (default: the first)")
    tls: IngressTLS | None = None


class SecretValue(Strict):
    """Where one secret value comes from at build time: never written into the spec itself."""

    env: str | None = Field(default=None, description="an environment variable of the build")
    file: str | None = Field(default=None, description="a file, relative to the App spec")
    sealed: str | None = Field(
        default=None,
        description="(sealed strategy) a value kubeseal sealed before, kept as it is: "
        "sealing again gives new ciphertext, so a digest only repeats with sealed values",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretValue:
        given = [k for k in ("env", "file", "sealed") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file, sealed")
        return self


class PlainSecret(Strict):
    """A Secret holding the values, for direct installs (never for a Git target)."""

    strategy: Literal["plain"]
    values: dict[str, SecretValue] = Field(min_length=1)

    @model_validator(mode="after")
    def _not_sealed(self) -> PlainSecret:
        if any(v.sealed is not None for v in self.values.values()):
            raise ValueError("`sealed` values belong to the sealed strategy")
        return self


class StoreRef(Strict):
    name: str
    kind: Literal["SecretStore", "ClusterSecretStore"] = "ClusterSecretStore"


class RemoteRef(Strict):
    key: str = Field(description="the key in the external store, e.g. prod/shop/db")
    property: str | None = Field(default=None, description="a property of a JSON value")
    version: str | None = None


class ExternalSecretSpec(Strict):
    """An ExternalSecret (External Secrets Operator, external-secrets.io/v1): the operator
    fetches the values from the store and writes the Secret; no value passes through lading."""

    strategy: Literal["external"]
    store: StoreRef
    refresh_interval: str = Field(default="1h", description="how often the operator re-reads")
    keys: dict[str, RemoteRef] = Field(min_length=1, description="Secret key -> remote key")


class SealedSecretSpec(Strict):
    """A SealedSecret (Bitnami sealed-secrets), sealed by kubeseal for the controller whose
    public certificate is given; only that controller can unseal it."""

    strategy: Literal["sealed"]
    certificate: str = Field(description="the controller's public certificate (PEM file)")
    scope: Literal["strict", "namespace-wide", "cluster-wide"] = "strict"
    values: dict[str, SecretValue] = Field(min_length=1)


SecretSpec = Annotated[
    PlainSecret | ExternalSecretSpec | SealedSecretSpec, Field(discriminator="strategy")
]


class Autoscaling(Strict):
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(ge=1)
    cpu_utilization: int = Field(default=80, ge=1, le=100, description="target average CPU %")

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas is below min_replicas")
        return self


class Volume(Strict):
    size: str = Field(description="e.g. 10Gi")
    mount_path: str = Field(pattern=r"^/", description="where the container sees it")
    storage_class: str | None = Field(default=None, description="default: the cluster's")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"] = (
        "ReadWriteOnce"
    )


class App(Strict):
    apiVersion: Literal["lading.dev/v1"] = "lading.dev/v1"
    kind: Literal["App"] = "App"
    name: str = Field(pattern=APP_NAME, max_length=APP_NAME_MAX)
    namespace: str | None = Field(
        default=None,
        pattern=APP_NAME,
        max_length=63,
        description="written into every object (default: none, the install's namespace)",
    )
    image: str = Field(min_length=1)
    replicas: int = Field(default=1, ge=0, description="ignored when autoscaling is on")
    command: list[str] | None = None
    args: list[str] | None = None
    ports: list[AppPort] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict, description="non-secret variables")
    config_map: bool = Field(
        default=False, description="put `env` into a ConfigMap, mounted with envFrom"
    )
    secret: SecretSpec | None = None
    resources: Resources | None = None
    probes: Probes = Field(default_factory=Probes)
    service: Service = Field(default_factory=Service)
    ingress: Ingress | None = None
    autoscaling: Autoscaling | None = None
    volume: Volume | None = None

    @model_validator(mode="after")
    def _consistent(self) -> App:
        names = [p.name for p in self.ports]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"port names must be unique: {', '.join(duplicates)}")
        if self.ingress and self.ingress.port and self.ingress.port not in names:
            raise ValueError(f"ingress.port {self.ingress.port!r} is not one of the ports")
        secret_keys = (
            self.secret.keys if isinstance(self.secret, ExternalSecretSpec)
            else self.secret.values if self.secret else {}
        )
        for key in [*self.env, *secret_keys]:
            if re.match(ENV_NAME, key) is None:
                raise ValueError(f"{key!r} is not a valid environment variable name")
        if (
            isinstance(self.secret, SealedSecretSpec)
            and self.secret.scope != "cluster-wide"
            and self.namespace is None
        ):
            raise ValueError(
                "a SealedSecret sealed with scope strict or namespace-wide is bound to a "
                "namespace: set `namespace`, or scope: cluster-wide"
            )
        return self


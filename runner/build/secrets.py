"""An App's secret by strategy: a plain Secret (direct installs), an ExternalSecret (External
Secrets Operator `external-secrets.io/v1`: no value passes through lading), or a SealedSecret
(sealed by kubeseal: only ciphertext leaves the build). All three end up as a Secret named
`<app>-secret` in the cluster, which the Deployment mounts with envFrom.

Values are read here, at the edge, and never appear in an error message.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from plans.app import App, ExternalSecretSpec, PlainSecret, SealedSecretSpec, SecretValue
from runner.build.seal import kubeseal_path, kubeseal_version, seal
from runner.common.errors import InputError
from runner.common.objects import Obj
from runner.common.workspace import confine

ESO_API_VERSION = "external-secrets.io/v1"


def secret_name(app: App) -> str:
    return f"{app.name}-secret"


def _metadata(app: App) -> Obj:
    meta: Obj = {"name": secret_name(app), "labels": {"app.kubernetes.io/name": app.name,
                                                     "app.kubernetes.io/managed-by": "lading"}}
    if app.namespace:
        meta["namespace"] = app.namespace
    return meta


def read_value(value: SecretValue, field: str, spec_dir: Path, display: str) -> bytes:
    """One value from the build's environment or a file beside the spec (inside its directory:
    a spec must not pull arbitrary files of the build machine into a Secret)."""
    if value.env is not None:
        found = os.environ.get(value.env)
        if found is None:
            raise InputError(
                f"{display}: {field}.env: the environment variable {value.env} is not set",
                hint="export it for the build; its value goes into the secret",
            )
        return found.encode()
    assert value.file is not None
    path = confine(value.file, spec_dir, f"{display}: {field}.file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{display}: {field}.file: cannot read {value.file!r}: "
                         f"{e.strerror}") from None


def secret_object(app: App, spec_dir: Path, display: str) -> tuple[Obj | None, dict[str, Any]]:
    """The secret object for the App's strategy (None without one) and what the artifact
    config records about it (strategy, key names, kubeseal's version; never values)."""
    spec = app.secret
    if spec is None:
        return None, {}
    if isinstance(spec, ExternalSecretSpec):
        return external_secret(app, spec), {"secret": {"strategy": "external",
                                                       "keys": sorted(spec.keys)}}
    values = {
        key: (v.sealed if v.sealed is not None
              else read_value(v, f"secret.values.{key}", spec_dir, display))
        for key, v in spec.values.items()
    }
    recorded: dict[str, Any] = {"strategy": spec.strategy, "keys": sorted(values)}
    if isinstance(spec, PlainSecret):
        plain = {k: v for k, v in values.items() if isinstance(v, bytes)}
        return plain_secret(app, plain), {"secret": recorded}
    certificate = confine(spec.certificate, spec_dir, f"{display}: secret.certificate")
    if not certificate.is_file():
        raise InputError(f"{display}: secret.certificate: {spec.certificate!r} is not a file",
                         hint="fetch it once with `kubeseal --fetch-cert > cert.pem`")
    fresh = sorted(k for k, v in values.items() if isinstance(v, bytes))
    sealed = sealed_secret(app, spec, values, certificate, display)
    if not fresh:
        return sealed, {"secret": recorded}
    # Recorded, so an artifact says which values were sealed by this build (new ciphertext).
    recorded["sealed_now"] = fresh
    return sealed, {"secret": recorded, "tools": {"kubeseal": kubeseal_version(kubeseal_path())}}


def plain_secret(app: App, values: dict[str, bytes]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(app),
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(values.items())},
    }


def external_secret(app: App, spec: ExternalSecretSpec) -> Obj:
    data = []
    for key, remote in sorted(spec.keys.items()):
        ref: Obj = {"key": remote.key}
        if remote.property:
            ref["property"] = remote.property
        if remote.version:
            ref["version"] = remote.version
        data.append({"secretKey": key, "remoteRef": ref})
    return {
        "apiVersion": ESO_API_VERSION,
        "kind": "ExternalSecret",
        "metadata": _metadata(app),
        "spec": {
            "refreshInterval": spec.refresh_interval,
            "secretStoreRef": {"name": spec.store.name, "kind": spec.store.kind},
            "target": {"name": secret_name(app), "creationPolicy": "Owner"},
            "data": data,
        },
    }


def sealed_secret(
    app: App,
    spec: SealedSecretSpec,
    values: dict[str, bytes | str],
    certificate: Path,
    display: str,
) -> Obj:
    """Values read now are sealed by kubeseal; values given already `sealed` are kept as they
    are, so a spec holding only sealed values builds to the same digest every time."""
    fresh = {k: v for k, v in values.items() if isinstance(v, bytes)}
    kept = {k: v for k, v in values.items() if isinstance(v, str)}
    annotations = _scope_annotations(spec.scope)
    encrypted: dict[str, str] = dict(kept)
    if fresh:
        secret = plain_secret(app, fresh)
        if annotations:
            secret["metadata"]["annotations"] = annotations
        sealed = seal(secret, certificate, spec.scope, display)
        encrypted.update(sealed.get("spec", {}).get("encryptedData", {}))
    metadata = _metadata(app)
    if annotations:
        metadata["annotations"] = annotations
    # The template is the Secret the controller writes: the same name, labels and scope.
    template: Obj = {"metadata": dict(metadata), "type": "Opaque"}
    return {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": metadata,
        "spec": {"encryptedData": dict(sorted(encrypted.items())), "template": template},
    }


def _scope_annotations(scope: str) -> dict[str, str]:
    # The controller reads the scope from these annotations (kubeseal sets the same ones).
    if scope == "namespace-wide":
        return {"sealedsecrets.bitnami.com/namespace-wide": "true"}
    if scope == "cluster-wide":
        return {"sealedsecrets.bitnami.com/cluster-wide": "true"}
    return {}


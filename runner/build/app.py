"""`lading build --app`: an App spec (plans/app.py) → its Kubernetes objects.

`app_objects` is pure: the spec and the already-made secret object in, objects out. Reading the
spec file and making the secret (reading values, running kubeseal) happen in `render_app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plans.app import App, AppPort, Probe
from plans.build import AppSource
from plans.common import validate_document
from plans.documents import load_yaml, read_text
from runner.build.render import Rendered
from runner.build.secrets import secret_name, secret_object
from runner.common.errors import InputError
from runner.common.objects import Obj, dump_stream

NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY = ("app.kubernetes.io/managed-by", "lading")


def load_app(path: Path, display: str) -> App:
    """The App spec in `path`; errors name the file and the field."""
    try:
        text = read_text(path, f"App spec {display}")
    except FileNotFoundError:
        raise InputError(f"App spec {display} does not exist") from None
    document = load_yaml(text, display)
    if not isinstance(document, dict):
        raise InputError(f"App spec {display} must be a mapping (apiVersion, kind: App, name…)")
    return validate_document(App, document, f"App spec {display}")


def render_app(source: AppSource, base: Path) -> Rendered:
    """The App's objects; a spec file's paths are relative to it, an inline spec's to `base`
    (the plan's directory)."""
    if source.file is not None:
        path = base / source.file
        app = load_app(path, source.file)
        spec_dir, display, file_name = path.parent, source.file, path.name
    else:
        assert source.spec is not None
        app, spec_dir, display, file_name = source.spec, base, "source.app.spec", None
    secret, secret_inputs = secret_object(app, spec_dir, display)
    objects = app_objects(app, secret)
    inputs: dict[str, Any] = {
        "type": "app",
        "app": app.name,
        # A name, not a path: a path would make the digest depend on where the checkout is.
        "file": file_name,
        "objects": sorted({o["kind"] for o in objects}),
        "tools": {},
        **secret_inputs,
    }
    return Rendered(dump_stream(objects), inputs, spec_dir)


def _metadata(app: App, name: str, extra_labels: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "labels": {NAME_LABEL: app.name, MANAGED_BY[0]: MANAGED_BY[1],
                                          **(extra_labels or {})}}
    if app.namespace:
        meta["namespace"] = app.namespace
    return meta


def config_map_name(app: App) -> str:
    return f"{app.name}-config"


def claim_name(app: App) -> str:
    return f"{app.name}-data"


def app_objects(app: App, secret: Obj | None) -> list[Obj]:
    """Deployment and Service always; ConfigMap, the secret object, Ingress, HPA and PVC when
    the spec switches them on."""
    objects: list[Obj] = [_deployment(app, secret is not None), _service(app)]
    if app.config_map and app.env:
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": _metadata(app, config_map_name(app)), "data": dict(app.env)})
    if secret is not None:
        objects.append(secret)
    if app.ingress:
        objects.append(_ingress(app))
    if app.autoscaling:
        objects.append(_autoscaler(app))
    if app.volume:
        objects.append(_claim(app))
    return objects


def _container_port(port: AppPort) -> int:
    return port.container_port or port.port


def _probe(probe: Probe, app: App) -> Obj:
    port: str | int = probe.port if probe.port is not None else app.ports[0].name
    action: Obj
    if probe.path is not None:
        action = {"httpGet": {"path": probe.path, "port": port}}
    elif probe.command is not None:
        action = {"exec": {"command": list(probe.command)}}
    else:
        action = {"tcpSocket": {"port": port}}
    return {
        **action,
        "initialDelaySeconds": probe.initial_delay_seconds,
        "periodSeconds": probe.period_seconds,
        "timeoutSeconds": probe.timeout_seconds,
        "failureThreshold": probe.failure_threshold,
    }


def _deployment(app: App, has_secret: bool) -> Obj:
    container: Obj = {
        "name": app.name,
        "image": app.image,
        "ports": [
            {"name": p.name, "containerPort": _container_port(p), "protocol": p.protocol}
            for p in app.ports
        ],
    }
    if app.command:
        container["command"] = list(app.command)
    if app.args:
        container["args"] = list(app.args)
    env_from: list[Obj] = []
    if app.env and app.config_map:
        env_from.append({"configMapRef": {"name": config_map_name(app)}})
    elif app.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(app.env.items())]
    if has_secret:
        env_from.append({"secretRef": {"name": secret_name(app)}})
    if env_from:
        container["envFrom"] = env_from
    if app.resources:
        container["resources"] = app.resources.model_dump(exclude_defaults=True)
    for kind in ("readiness", "liveness", "startup"):
        probe = getattr(app.probes, kind)
        if probe is not None:
            container[f"{kind}Probe"] = _probe(probe, app)
    pod: Obj = {"containers": [container]}
    spec: Obj = {
        "selector": {"matchLabels": {NAME_LABEL: app.name}},
        "template": {"metadata": {"labels": {NAME_LABEL: app.name}}, "spec": pod},
    }
    if app.volume:
        container["volumeMounts"] = [{"name": "data", "mountPath": app.volume.mount_path}]
        pod["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name(app)}}]
        if app.volume.access_mode in ("ReadWriteOnce", "ReadWriteOncePod"):
            # A rolling update starts the new pod before the old one lets go of the volume;
            # with a single-node access mode the new pod would wait for it forever.
            spec["strategy"] = {"type": "Recreate"}
    if app.autoscaling is None:
        # With an autoscaler the replica count is the HPA's: a replicas field here would
        # reset it on every install.
        spec["replicas"] = app.replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(app, app.name),
            "spec": spec}


def _service(app: App) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(app, app.name),
        "spec": {
            "type": app.service.type,
            "selector": {NAME_LABEL: app.name},
            "ports": [
                {"name": p.name, "port": p.port, "targetPort": p.name, "protocol": p.protocol}
                for p in app.ports
            ],
        },
    }


def _ingress(app: App) -> Obj:
    ingress = app.ingress
    assert ingress is not None
    port = ingress.port or app.ports[0].name
    meta = _metadata(app, app.name)
    spec: Obj = {
        "rules": [{
            "host": ingress.host,
            "http": {"paths": [{
                "path": ingress.path,
                "pathType": ingress.path_type,
                "backend": {"service": {"name": app.name, "port": {"name": port}}},
            }]},
        }],
    }
    if ingress.ingress_class:
        spec["ingressClassName"] = ingress.ingress_class
    if ingress.tls:
        # cert-manager's ingress-shim watches this annotation and issues the certificate into
        # the Secret named in spec.tls.
        annotation = ("cert-manager.io/cluster-issuer" if ingress.tls.issuer_kind ==
                      "ClusterIssuer" else "cert-manager.io/issuer")
        meta["annotations"] = {annotation: ingress.tls.issuer}
        spec["tls"] = [{"hosts": [ingress.host],
                        "secretName": ingress.tls.secret_name or f"{app.name}-tls"}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta,
            "spec": spec}


def _autoscaler(app: App) -> Obj:
    scaling = app.autoscaling
    assert scaling is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(app, app.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": scaling.cpu_utilization}},
            }],
        },
    }


def _claim(app: App) -> Obj:
    volume = app.volume
    assert volume is not None
    spec: Obj = {"accessModes": [volume.access_mode],
                 "resources": {"requests": {"storage": volume.size}}}
    if volume.storage_class:
        spec["storageClassName"] = volume.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _metadata(app, claim_name(app)), "spec": spec}

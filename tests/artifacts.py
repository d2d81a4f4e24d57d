"""Test helpers: publish objects as real lading artifacts (through the same packaging and push
code the build runner uses), and small object factories."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from runner.build.package import ArtifactMeta, package
from runner.build.push import push
from runner.common.objects import canonical_order, dump_stream, normalise, object_id
from runner.common.output import silent
from runner.common.reference import parse_ref
from runner.common.store import RegistryOptions

Obj = dict[str, Any]


def publish(objects: list[Obj], to: str, version: str = "test") -> str:
    """Package `objects` as a lading v1 artifact at `to` (a registry repo:tag or an
    oci-layout: ref) and return its pinned reference."""
    ordered = canonical_order(normalise(o) for o in objects)
    meta = ArtifactMeta(title="test", created="1970-01-01T00:00:00Z", version=version,
                        source_url=None, revision=None, source_path=None,
                        inputs={"type": "test", "tools": {}}, annotations={})
    pkg = package(dump_stream(ordered), [str(object_id(o)) for o in ordered], meta)
    refs = push([parse_ref(to)], pkg.manifest.descriptor, pkg.manifest.data,
                [(b.descriptor, (lambda b=b: b.data)) for b in pkg.blobs],
                RegistryOptions(), silent)
    return refs[0]


def layout_ref(tmp: Path, tag: str = "v1") -> str:
    return f"oci-layout:{tmp / 'layout'}:{tag}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def config_map(name: str, namespace: str | None, data: dict[str, str], **extra: Any) -> Obj:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data, **extra}


def namespace_obj(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(name: str, namespace: str, replicas: int = 1,
               annotations: dict[str, str] | None = None) -> Obj:
    template_meta: dict[str, Any] = {"labels": {"app": name}}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template_meta,
                         "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}},
        },
    }


def widget_crd(group: str) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget",
                      "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object", "properties": {"size": {"type": "integer"}}}}}}}],
        },
    }

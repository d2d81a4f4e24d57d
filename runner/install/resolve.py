"""Mapping each object to the API resource that serves it, and placing it in a namespace.

Kinds whose CustomResourceDefinition is in the same artifact resolve from that CRD: they do
not exist in the cluster until the first stage has run.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from runner.common.errors import InputError
from runner.common.kube import KubeClient, KubeError, Resource
from runner.common.objects import Obj, ObjectId, object_id
from runner.install.order import stage_of


@dataclass(frozen=True)
class Planned:
    """One object ready to apply: its final form, identity, resource and stage."""

    obj: Obj
    oid: ObjectId
    resource: Resource
    stage: str
    where: str
    kind_pending: bool  # served by a CRD from this artifact that the cluster does not have yet
    namespace_pending: bool  # lives in a Namespace this artifact creates


NAMESPACES = Resource("", "v1", "Namespace", "namespaces", False)
MAX_LISTED = 20  # problems named one by one; the rest are counted


def namespaces_present(client: KubeClient, located: list[tuple[Obj, str]],
                       default_namespace: str) -> set[str]:
    """Which of the namespaces the objects (and the install) use exist already. A GET each,
    not a LIST: a deployer with rights in its own namespaces only may not list namespaces.
    One it may not even read is assumed present; the dry-run finds out if it is not.
    Discovery of the objects' group/versions goes out in the same round trip."""
    wanted = {str((o.get("metadata") or {}).get("namespace") or "") for o, _ in located}

    def present(name: str) -> bool:
        try:
            return client.get(NAMESPACES, None, name) is not None
        except KubeError as e:
            if e.status != 403:
                raise
            return True

    names = sorted((wanted | {default_namespace}) - {""})
    with ThreadPoolExecutor(max_workers=min(len(names), 16) + 1) as pool:
        discovering = pool.submit(
            client.discover, {str(o.get("apiVersion") or "") for o, _ in located})
        found = {name for name, there in zip(names, pool.map(present, names), strict=True)
                 if there}
        discovering.result()
    return found


def crd_resources(objects: list[Obj]) -> dict[tuple[str, str], Resource]:
    """(apiVersion, kind) → Resource for every served version of every CRD in `objects`."""
    found: dict[tuple[str, str], Resource] = {}
    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        group, kind, plural = spec.get("group", ""), names.get("kind", ""), names.get("plural", "")
        for version in spec.get("versions") or []:
            if version.get("served", True):
                api_version = f"{group}/{version.get('name')}"
                found[(api_version, kind)] = Resource(
                    group,
                    str(version.get("name")),
                    kind,
                    plural,
                    spec.get("scope", "Namespaced") == "Namespaced",
                )
    return found


def resolve(
    located: list[tuple[Obj, str]],
    client: KubeClient,
    default_namespace: str,
    existing_namespaces: set[str],
    create_namespace: bool,
) -> list[Planned]:
    """Resolve every object, collecting every problem before raising one InputError.
    `create_namespace` promises the default namespace will be created if missing."""
    objects = [obj for obj, _ in located]
    from_crds = crd_resources(objects)
    created_namespaces = {
        str(object_id(o).name)
        for o in objects
        if o.get("kind") == "Namespace" and o.get("apiVersion") == "v1"
    }
    problems: list[str] = []
    planned: list[Planned] = []
    client.discover(str(obj.get("apiVersion") or "") for obj in objects)
    for obj, where in located:
        oid = object_id(obj)
        resource = client.resource_for(oid.api_version, oid.kind)
        pending = False
        if resource is None:
            resource = from_crds.get((oid.api_version, oid.kind))
            pending = resource is not None
        if resource is None:
            problems.append(
                f"{_named(oid)} ({where}): the cluster has no {oid.kind} in {oid.api_version} and "
                "no CustomResourceDefinition in the artifact defines it"
            )
            continue
        meta = dict(obj["metadata"])
        if resource.namespaced:
            meta["namespace"] = meta.get("namespace") or default_namespace
        elif meta.get("namespace"):
            problems.append(
                f"{_named(oid)} ({where}): it is cluster-scoped but names "
                f"namespace {meta['namespace']!r}; remove metadata.namespace"
            )
            continue
        final = {**obj, "metadata": meta}
        namespace = str(meta.get("namespace") or "")
        namespace_pending = bool(namespace) and namespace not in existing_namespaces
        promised = created_namespaces | ({default_namespace} if create_namespace else set())
        if namespace_pending and namespace not in promised:
            problems.append(
                f"{_named(oid)} ({where}): namespace {namespace!r} does not exist; add a Namespace "
                "to the artifact, or pass --create-namespace (create_namespace: true in a plan)"
            )
            continue
        planned.append(
            Planned(
                final,
                object_id(final),
                resource,
                stage_of(oid, resource.namespaced),
                where,
                pending,
                namespace_pending,
            )
        )
    if problems:
        shown = problems[:MAX_LISTED]
        more = len(problems) - len(shown)
        raise InputError(
            f"{len(problems)} object(s) cannot be installed:\n  " + "\n  ".join(shown)
            + (f"\n  (and {more} more)" if more else "")
        )
    return planned


def _named(oid: ObjectId) -> str:
    return f"{oid.kind}/{oid.name}" + (f" in {oid.namespace}" if oid.namespace else "")

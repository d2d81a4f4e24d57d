"""What an install may reach: the namespaces it may write into, and the names it must leave to
lading's own control objects. Pure.

An install writes into its own namespace (`-n`), into namespaces the artifact itself creates
(a Namespace object that does not exist yet, or that this inventory already owns), and into
namespaces the plan allows by name (`--allow-namespace NS`, `*` for any). Anything else — an
object naming `kube-system` in an artifact installed with `-n shop` — is refused before the
first write, as kubectl refuses a `-n` that contradicts the objects.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from runner.common.objects import Obj, ObjectId
from runner.install.ownership import is_member


def own_namespaces(
    install_namespace: str,
    artifact_namespaces: Iterable[str],
    live_namespaces: dict[str, Obj],
    inventory_id: str,
) -> set[str]:
    """The install namespace, plus each Namespace the artifact holds that is new or already a
    member of this inventory. `live_namespaces`: the live Namespace objects among them."""
    owned = {install_namespace}
    for name in artifact_namespaces:
        live = live_namespaces.get(name)
        if live is None or is_member(live, inventory_id):
            owned.add(name)
    return owned


def _allowed(namespace: str, owned: set[str], allow: tuple[str, ...]) -> bool:
    return namespace in owned or any(fnmatch.fnmatchcase(namespace, p) for p in allow)


def outside(oids: Iterable[ObjectId], owned: set[str], allow: Iterable[str]) -> list[ObjectId]:
    """Namespaced objects in a namespace the install may not write into."""
    patterns = tuple(allow)
    return [o for o in oids if o.namespace and not _allowed(o.namespace, owned, patterns)]


def cluster_scoped(oids: Iterable[ObjectId]) -> list[ObjectId]:
    """Objects with no namespace: a reviewer should see each of them (a ClusterRoleBinding to
    cluster-admin reaches further than anything namespaced)."""
    return sorted((o for o in oids if not o.namespace), key=str)


CONTROL_KINDS = {("", "Secret"), ("coordination.k8s.io", "Lease")}


def control_collisions(
    oids: Iterable[ObjectId], control_name: str, namespace: str
) -> list[ObjectId]:
    """Artifact objects named like this inventory's own parent Secret or Lease: applying one
    would let the artifact rewrite its own inventory or hold the install lock forever."""
    return [
        o
        for o in oids
        if (o.group, o.kind) in CONTROL_KINDS and o.name == control_name
        and o.namespace == namespace
    ]

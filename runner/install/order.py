"""Which stage each object is applied in. Pure.

crds-namespaces  CRDs and Namespaces: everything else may depend on them; we wait for
                 CRDs to be Established and Namespaces Active before going on.
cluster          other cluster-scoped kinds (ClusterRoles, StorageClasses, PriorityClasses…)
namespaced       everything else; admission webhooks last, so they cannot block the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from runner.common.objects import ObjectId, kind_rank

STAGES = ("crds-namespaces", "cluster", "namespaced", "webhooks")
_FIRST = {("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "Namespace")}
_WEBHOOKS = {
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
}


def stage_of(oid: ObjectId, namespaced: bool) -> str:
    if (oid.group, oid.kind) in _FIRST:
        return "crds-namespaces"
    if (oid.group, oid.kind) in _WEBHOOKS:
        return "webhooks"
    return "namespaced" if namespaced else "cluster"


def prune_order_key(oid: ObjectId) -> int:
    """Prune in reverse stage order: workloads before the namespaces and CRDs they live in."""
    stage = stage_of(oid, bool(oid.namespace))
    return -STAGES.index(stage)


class _Staged(Protocol):
    @property
    def oid(self) -> ObjectId: ...

    @property
    def stage(self) -> str: ...


S = TypeVar("S", bound=_Staged)


def apply_order(items: Iterable[S]) -> list[S]:
    """The one order objects are applied in: by stage, then by kind (ServiceAccounts before
    the Deployments that use them), then by name."""
    return sorted(items, key=lambda p: (STAGES.index(p.stage), kind_rank(p.oid.kind),
                                        p.oid.group, p.oid.kind, p.oid.namespace, p.oid.name))

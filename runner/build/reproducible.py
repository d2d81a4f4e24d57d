"""`--check-reproducible`: which objects differ between two renders of the same input.

"The same inputs give the same digest" holds for lading's own packaging, but not for every
source: a Helm chart inflated through kustomize may name its test Pods with random suffixes, and
a SealedSecret sealed at build time is new ciphertext each time. Rendering twice finds out.
"""

from __future__ import annotations

from runner.common.objects import dump_stream, object_id, parse_stream


def changed_objects(first: str, second: str) -> list[str]:
    """Ids of the objects that differ between two canonical streams: present in one only, or
    present in both with different content."""
    a = {str(object_id(o)): dump_stream([o]) for o in parse_stream(first, "first render")}
    b = {str(object_id(o)): dump_stream([o]) for o in parse_stream(second, "second render")}
    return sorted(oid for oid in a.keys() | b.keys() if a.get(oid) != b.get(oid))

"""The object model: Kubernetes objects as plain dicts, identified by ObjectId.

Parsing goes through plans.documents (bounded in size, depth, aliases and expansion; duplicate
keys refused; JSON values only), validation names the document it complains about and refuses
objects the API server could not store, and the canonical form (key order and object order) is
what makes artifacts reproducible.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from plans.documents import limits, load_yaml_stream, plain_tag, size_text
from runner.common.errors import InputError

Obj = dict[str, Any]

MAX_OBJECTS = 10_000

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kinds whose names are path segments rather than DNS subdomains (RBAC allows ':' etc.).
_PATH_SEGMENT_NAME_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


@dataclass(frozen=True, order=True)
class ObjectId:
    """group/version/Kind/namespace/name, the identity lading reports objects by."""

    group: str
    version: str
    kind: str
    namespace: str
    name: str

    @property
    def group_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def identity(self) -> tuple[str, str, str, str]:
        """What makes two objects the same object: version does not."""
        return (self.group, self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.group}/{self.version}/{self.kind}/{self.namespace}/{self.name}"


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def object_id(obj: Obj) -> ObjectId:
    group, version = split_api_version(str(obj.get("apiVersion", "")))
    meta = obj.get("metadata") or {}
    return ObjectId(
        group,
        version,
        str(obj.get("kind", "")),
        str(meta.get("namespace") or ""),
        str(meta.get("name", "")),
    )


# -- parsing ---------------------------------------------------------------------------------


def parse_stream(text: str, source: str) -> list[Obj]:
    """Parse a multi-document YAML stream into objects. `List` kinds are flattened; empty
    documents are skipped. Errors name `source`, the line, or the document number."""
    objects: list[Obj] = []
    for number, doc in enumerate(load_yaml_stream(text, source), start=1):
        objects.extend(_accept(doc, f"{source} (document {number})"))
        if len(objects) > MAX_OBJECTS:
            raise InputError(f"{source}: more than {MAX_OBJECTS} objects")
    return objects


def _accept(doc: Any, where: str) -> Iterator[Obj]:
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise InputError(
            f"{where}: expected a mapping (a Kubernetes object), got {type(doc).__name__}"
        )
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        for i, item in enumerate(doc["items"]):
            yield from _accept(item, f"{where} item {i}")
        return
    yield doc


# -- validation ------------------------------------------------------------------------------


def validate(obj: Obj, where: str) -> list[str]:
    """Problems with one object, each a sentence naming `where`; empty when it is valid."""
    problems: list[str] = []
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not api_version:
        problems.append(f"{where}: missing apiVersion")
    elif api_version.count("/") > 1 or api_version.endswith("/"):
        problems.append(f"{where}: invalid apiVersion {api_version!r}")
    if kind is not None and not isinstance(kind, str):
        problems.append(f"{where}: kind must be a string, not {type(kind).__name__}")
        kind = None
    elif not kind:
        problems.append(f"{where}: missing kind")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        problems.append(f"{where}: missing metadata")
        return problems
    name, namespace = meta.get("name"), meta.get("namespace")
    label = f"{where} ({kind or '?'} {name or '?'})"
    if not isinstance(name, str) or not name:
        problems.append(
            f"{label}: missing metadata.name (generateName is not supported: "
            "a declarative artifact needs stable names)"
        )
    elif kind in _PATH_SEGMENT_NAME_KINDS:
        if name in (".", "..") or "/" in name or "%" in name:
            problems.append(f"{label}: invalid name {name!r}")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(
            f"{label}: invalid name {name!r}: must be a DNS subdomain "
            "(lowercase letters, digits, '-' and '.', at most 253 characters)"
        )
    if namespace is not None and (
        not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace) or len(namespace) > 63
    ):
        problems.append(f"{label}: invalid namespace {namespace!r}")
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is not None and (
            not isinstance(value, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            problems.append(f"{label}: metadata.{field} must map strings to strings")
    return problems


def check_objects(located: Iterable[tuple[Obj, str]]) -> list[Obj]:
    """Validate every object and reject duplicates and objects larger than the API server
    accepts; report every problem at once."""
    problems: list[str] = []
    seen: dict[tuple[str, str, str, str], str] = {}
    objects: list[Obj] = []
    max_bytes = limits().object_bytes
    for obj, where in located:
        found = validate(obj, where)
        problems.extend(found)
        if found:
            continue
        oid = object_id(obj)
        if oid.identity() in seen:
            problems.append(
                f"duplicate object {oid.group_kind} {oid.namespace or '-'}/{oid.name}:"
                f" defined in {seen[oid.identity()]} and in {where}"
            )
            continue
        seen[oid.identity()] = where
        too_big = _size_problem(obj, max_bytes)
        if too_big:
            problems.append(f"{where} ({oid.kind} {oid.name}): {too_big}")
            continue
        objects.append(obj)
    if problems:
        raise InputError(f"{len(problems)} invalid object(s):\n  " + "\n  ".join(problems))
    return objects


# What json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) uses, made
# once: json.dumps makes a new encoder per call for any argument but the object (a quarter of
# the time of a manifest's encoding).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _size_problem(obj: Obj, max_bytes: int) -> str | None:
    """Why the API server would refuse `obj` for its size (etcd stores at most 1.5 MiB per
    request; a bigger body makes the server drop the connection mid-install), or None."""
    try:
        encoded = _COMPACT_JSON.encode(obj)
    except (TypeError, ValueError) as e:
        return f"cannot be encoded as JSON: {e}"
    # Characters first: bytes are only counted when they could matter.
    if len(encoded) * 4 <= max_bytes:
        return None
    size = len(encoded.encode("utf-8", "surrogatepass"))
    if size <= max_bytes:
        return None
    return (
        f"is {size_text(size)} as JSON, more than the {size_text(max_bytes)} the API server "
        "accepts for one object (LADING_MAX_OBJECT_BYTES)"
    )


# -- canonical form --------------------------------------------------------------------------

# Apply order, as in Flux's ssa and Helm: what others depend on comes first. Kinds not listed
# sort after these, before the admission webhooks that could otherwise block them.
_KIND_ORDER = [
    "CustomResourceDefinition",
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "PriorityClass",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "RuntimeClass",
    "IngressClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "Ingress",
    "APIService",
]
# Admission configuration last, as runner.install.order applies it: it cannot block the rest.
_LAST_KINDS = [
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
]
_RANK = {kind: i for i, kind in enumerate(_KIND_ORDER)}
_LAST_RANK = {kind: len(_KIND_ORDER) + 1 + i for i, kind in enumerate(_LAST_KINDS)}


def kind_rank(kind: str) -> int:
    return _RANK.get(kind, _LAST_RANK.get(kind, len(_KIND_ORDER)))


def sort_key(obj: Obj) -> tuple[int, str, str, str, str]:
    oid = object_id(obj)
    return (kind_rank(oid.kind), oid.group, oid.kind, oid.namespace, oid.name)


def canonical_order(objects: Iterable[Obj]) -> list[Obj]:
    return sorted(objects, key=sort_key)


_TOP_KEYS = ("apiVersion", "kind", "metadata")


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def normalise(obj: Obj) -> Obj:
    """Stable key order: apiVersion, kind, metadata first, everything else sorted. List order
    is meaning (containers, args) and is kept."""
    head = {k: _sorted(obj[k]) for k in _TOP_KEYS if k in obj}
    tail = {k: _sorted(obj[k]) for k in sorted(obj) if k not in _TOP_KEYS}
    return {**head, **tail}


_STR, _MAP, _SEQ = (f"tag:yaml.org,2002:{t}" for t in ("str", "map", "seq"))


class _Canonical:
    """Block style, no aliases, long strings unwrapped: stable output for any input."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        # The serializer asks what tag each scalar would have written plain and quoted, to
        # decide whether it needs quotes (55,000 questions per 1,000 objects). Without path
        # resolvers, quoted is always str and plain depends on the text alone.
        if kind is not yaml.ScalarNode:
            return _MAP if kind is yaml.MappingNode else _SEQ
        return plain_tag(value) if implicit[0] else _STR


class _CanonicalDumper(_Canonical, yaml.SafeDumper):
    pass


def _str_style(data: str) -> str | None:
    return "|" if "\n" in data else None


def _str_representer(dumper: Any, data: str) -> yaml.ScalarNode:
    node: yaml.ScalarNode = dumper.represent_scalar(
        "tag:yaml.org,2002:str", data, style=_str_style(data)
    )
    return node


_CanonicalDumper.add_representer(str, _str_representer)

assert not _CanonicalDumper.yaml_path_resolvers  # what makes `_Canonical.resolve` exact
_FastDumper: Any = _CanonicalDumper
if hasattr(yaml, "CSafeDumper"):

    class _CanonicalCDumper(_Canonical, yaml.CSafeDumper):
        """The same canonical form through libyaml's emitter, ten times faster."""

    _CanonicalCDumper.add_representer(str, _str_representer)
    _FastDumper = _CanonicalCDumper

# libyaml escapes what PyYAML's emitter writes as is: NEL and characters beyond the Basic
# Multilingual Plane. A document holding one goes through the pure-Python emitter, so the
# canonical bytes — and the digest — never depend on which emitter this machine has.
_EMITTERS_DISAGREE = re.compile("[\x85\U00010000-\U0010FFFF]")


def _dump_with(obj: Obj, dumper_class: Any) -> str:
    """What yaml.dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True,
    width=1 << 20) writes, with the nodes made by `_node`."""
    stream = io.StringIO()
    dumper = dumper_class(
        stream, default_flow_style=False, allow_unicode=True, width=1 << 20, sort_keys=False
    )
    try:
        dumper.open()
        dumper.serialize(_node(obj, dumper))
        dumper.close()
    finally:
        dumper.dispose()
    return stream.getvalue()


def _node(value: Any, dumper: Any) -> yaml.Node:
    """The node the dumper's representer makes of `value`, for strings, mappings and lists
    without its per-value dispatch (a quarter of the emitting time): no aliases, block style
    throughout. Other values (numbers, booleans, null) go through the representer."""
    kind = type(value)
    if kind is str:
        return yaml.ScalarNode(_STR, value, style=_str_style(value))
    if kind is dict:
        pairs = [(_node(k, dumper), _node(v, dumper)) for k, v in value.items()]
        return yaml.MappingNode(_MAP, pairs, flow_style=False)
    if kind is list:
        return yaml.SequenceNode(_SEQ, [_node(v, dumper) for v in value], flow_style=False)
    node: yaml.Node = dumper.represent_data(value)
    return node


class _NotPlain(Exception):
    """A document `_plain_dump` leaves to the emitters."""


# What both emitters write unquoted in block style when the text resolves to a string: no
# indicator first (? : , [ ] { } # & * ! | > ' " % @ `, a dash before a space or the end,
# the --- and ... of document markers), only printable ASCII without # or quotes, no ": ",
# no space or colon at the end.
_PLAIN = re.compile(r"(?!---|-(?: |$))[A-Za-z0-9_/-][A-Za-z0-9_./:=+@ -]*").fullmatch


def _plain_scalar(value: Any) -> str:
    kind = type(value)
    if kind is str:
        # Keys and most values recur from object to object: each text is judged once.
        text = _PLAIN_TEXT.get(value)
        if text is None:
            text = _plain_text(value)
            if len(value) <= 64 and len(_PLAIN_TEXT) < 16384:
                _PLAIN_TEXT[value] = text
        if not text:
            raise _NotPlain
        return text
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    raise _NotPlain  # floats have several spellings: the representer's is the canonical one


def _plain_text(value: str) -> str:
    """How `value` is written, or "" when not plain."""
    if not value:
        return "''"
    if len(value) > 1024 or not _PLAIN(value) or value[-1] in ": " or ": " in value:
        return ""
    # A string YAML would read as something else (`80`, `yes`, `null`) gets single quotes;
    # these texts hold none to double.
    return value if plain_tag(value) == _STR else f"'{value}'"


_PLAIN_TEXT: dict[str, str] = {}


def _plain_mapping(
    mapping: Obj, keys: Iterable[str], lead: str, indent: str, out: list[str], sort: bool
) -> None:
    for key in keys:
        value = mapping[key]
        # A key longer than 128 characters is written as an explicit `? key`, and PyYAML's
        # emitter writes the empty key so too.
        if type(key) is not str or not key or len(key) > 128:
            raise _NotPlain
        out += (lead, _plain_scalar(key))
        lead = indent
        kind = type(value)
        if kind is dict:
            if not value:
                out.append(": {}\n")
                continue
            out.append(":\n")
            keys = sorted(value) if sort else value
            _plain_mapping(value, keys, indent + "  ", indent + "  ", out, sort)
        elif kind is list:
            if not value:
                out.append(": []\n")
                continue
            out.append(":\n")
            _plain_items(value, indent, indent, out, sort)  # in a mapping: not indented
        else:
            out += (": ", _plain_scalar(value), "\n")


def _plain_items(items: list[Any], lead: str, indent: str, out: list[str], sort: bool) -> None:
    inner = indent + "  "
    for item in items:
        out += (lead, "- ")
        lead = indent
        kind = type(item)
        if kind is dict:
            if item:
                # Its first key follows the dash.
                _plain_mapping(item, sorted(item) if sort else item, "", inner, out, sort)
            else:
                out.append("{}\n")
        elif kind is list:
            if item:
                _plain_items(item, "", inner, out, sort)
            else:
                out.append("[]\n")
        else:
            out += (_plain_scalar(item), "\n")


def _plain_dump(obj: Obj, *, normalising: bool = False) -> str:
    """What both emitters write for a document whose strings are plain words (names, labels,
    image references, most values) and whose numbers are integers: most manifests. Written
    here in a quarter of libyaml's time; any other document raises _NotPlain. A property test
    holds this to both emitters' bytes. `normalising` writes `normalise(obj)` without making
    it: keys in normalise's order."""
    if not obj:
        raise _NotPlain
    out: list[str] = []
    keys = _normalised_keys(obj) if normalising else obj
    _plain_mapping(obj, keys, "", "", out, normalising)
    return "".join(out)


def _normalised_keys(obj: Obj) -> list[str]:
    return [k for k in _TOP_KEYS if k in obj] + sorted(k for k in obj if k not in _TOP_KEYS)


def _dump(obj: Obj) -> str:
    try:
        return _plain_dump(obj)
    except _NotPlain:
        return _emitted(obj)


def _emitted(obj: Obj) -> str:
    text = _dump_with(obj, _FastDumper)
    # An escape in libyaml's output is the only place the emitters can differ; most documents
    # have no backslash at all, and only those that do are looked at closely.
    if (
        _FastDumper is not _CanonicalDumper
        and "\\" in text
        and _EMITTERS_DISAGREE.search(json.dumps(obj, ensure_ascii=False))
    ):
        return _dump_with(obj, _CanonicalDumper)
    return text


def dump_stream(objects: Iterable[Obj]) -> str:
    """The canonical multi-document YAML stream of already-normalised, ordered objects."""
    return _stream([_dump(obj) for obj in objects])


def canonical_stream(objects: Iterable[Obj]) -> str:
    """dump_stream of the normalised objects (ordered already), without making the normalised
    copies of the documents written directly."""
    docs: list[str] = []
    for obj in objects:
        try:
            docs.append(_plain_dump(obj, normalising=True))
        except _NotPlain:
            docs.append(_emitted(normalise(obj)))
    return _stream(docs)


def _stream(docs: list[str]) -> str:
    return "---\n" + "---\n".join(docs) if docs else ""

"""Reading YAML and JSON that comes from outside, in bounded time and memory.

Everything lading parses goes through here: plan files, inline manifests, kustomize and helm
output, artifact layers, artifact configs, registry JSON and layout indexes. It lives in
plans/, the bottom layer, because plans/ must read plan files without importing runner/, and
because what a document may be (its size, depth, aliases, unique keys) is part of the contract.

YAML is composed by libyaml's C parser into a node graph; aliases are shared nodes in that
graph. Before anything is constructed, one pass visits each distinct node once (memoised, so a
node that a thousand aliases point at is measured once) and refuses documents whose expansion
would be too big or too deep, that have too many aliases, recursive aliases or duplicate keys.
An alias bomb ("billion laughs") is thus refused in time linear in its text, never by walking
what it expands to.

Values are JSON values, as Kubernetes reads YAML (sigs.k8s.io/yaml converts to JSON): an
unquoted date stays the string it is, `!!binary`, `!!set`, `!!omap`, `!!pairs`, NaN and
infinities have no JSON form and are refused, and keys are strings (`80:` is `"80"`).

Every limit is an environment variable (see plans.limits), documented in the README's "Limits".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from plans.errors import InputError
from plans.limits import Limits, decode, limits, size_text, too_big

# Re-exported: what lading accepts is part of reading documents for the rest of lading.
__all__ = [
    "Limits",
    "decode",
    "limits",
    "load_json",
    "load_yaml",
    "load_yaml_stream",
    "plain_tag",
    "read_stdin",
    "read_text",
    "size_text",
]

# -- reading files -----------------------------------------------------------------------------


def read_text(path: Path, what: str, max_bytes: int | None = None) -> str:
    """A UTF-8 text file, refused (not read to the end) when larger than `max_bytes`."""
    cap = max_bytes or limits().input_bytes
    try:
        with path.open("rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror or e}") from None
    if len(data) > cap:
        raise too_big(what, len(data), cap, "LADING_MAX_INPUT_BYTES")
    return decode(data, what)


def read_stdin(what: str = "plan <stdin>", max_bytes: int | None = None) -> str:
    """Standard input as UTF-8 text, refused (not read to the end) when larger than the
    input limit: `lading run -f - < /dev/zero` stops at the limit instead of filling memory."""
    import sys

    cap = max_bytes or limits().input_bytes
    raw = getattr(sys.stdin, "buffer", None)  # a text-only stream (tests) has none
    data = raw.read(cap + 1) if raw is not None else sys.stdin.read(cap + 1).encode()
    if len(data) > cap:
        raise too_big(what, len(data), cap, "LADING_MAX_INPUT_BYTES")
    return decode(data, what)


# -- JSON --------------------------------------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(data: bytes | str, what: str, max_bytes: int | None = None) -> Any:
    """A JSON document with a size and a depth limit, duplicate keys and NaN refused. Errors
    are InputErrors naming `what`."""
    bounds = limits()
    cap = max_bytes or bounds.input_bytes
    if len(data) > cap:
        raise too_big(what, len(data), cap, "LADING_MAX_INPUT_BYTES")
    text = decode(data, what) if isinstance(data, bytes) else data
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise InputError(f"{what}: nested deeper than {bounds.depth} levels") from None
    except ValueError as e:  # JSONDecodeError, duplicate keys, NaN, 5,000-digit integers
        raise InputError(f"{what} is not valid JSON: {_value_problem(e)}") from None
    if _json_depth(document, bounds.depth) > bounds.depth:
        raise InputError(f"{what}: nested deeper than {bounds.depth} levels")
    return document


def _json_depth(value: Any, limit: int) -> int:
    stack: list[tuple[Any, int]] = [(value, 0)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth) for child in children)
    return deepest


# -- YAML --------------------------------------------------------------------------------------

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"
_STR, _MAP, _SEQ = (f"tag:yaml.org,2002:{t}" for t in ("str", "map", "seq"))


class _Loader(_Base):  # type: ignore[misc]
    """libyaml's parser with SafeLoader's constructors, narrowed to JSON values.

    libyaml calls back into Python to resolve every scalar's tag and around every node for
    path resolvers. This loader has no path resolvers, so those callbacks return at once, and
    a plain scalar's tag depends on its text alone (`plain_tag`)."""

    def resolve(self, kind: Any, value: str, implicit: tuple[bool, bool]) -> str:
        if kind is not ScalarNode:
            return _MAP if kind is MappingNode else _SEQ
        return plain_tag(value) if implicit[0] else _STR

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping: dict[Any, Any] = super().construct_mapping(node, deep)
        if all(isinstance(key, str) for key in mapping):
            return mapping
        # Merged keys come first in the flattened node, so a key written here still wins.
        return {_json_key(key): value for key, value in mapping.items()}


_RESOLVER: Any = yaml.resolver.Resolver()
_RESOLVED: dict[str, str] = {}
assert not _Loader.yaml_path_resolvers  # what makes the shortcuts above exact


def plain_tag(value: str) -> str:
    """The tag YAML 1.1 gives `value` written plain (unquoted): int for `80`, bool for `yes`,
    str for `web`. Short texts (keys, most values) are resolved once per process: the reader
    asks for every plain scalar, and runner.common.objects' writer for every string."""
    tag = _RESOLVED.get(value)
    if tag is None:
        tag = _RESOLVER.resolve(ScalarNode, value, (True, False))
        if len(value) <= 64 and len(_RESOLVED) < 16384:
            _RESOLVED[value] = tag
    return tag


def _json_key(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(key)


def _as_string(loader: Any, node: ScalarNode) -> str:
    value: str = loader.construct_scalar(node)
    return value


def _float(loader: Any, node: ScalarNode) -> float:
    value: float = loader.construct_yaml_float(node)
    if value != value or value in (float("inf"), float("-inf")):
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} has no JSON form (NaN and infinities)", node.start_mark
        )
    return value


def _no_json_form(loader: Any, node: Node) -> None:
    del loader
    raise yaml.constructor.ConstructorError(
        None,
        None,
        f"the YAML type {node.tag.rsplit(':', 1)[-1]!r} has no JSON form",
        node.start_mark,
    )


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_string)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _no_json_form)


class _Refused(Exception):
    """A limit was hit while measuring the node graph; `mark` is where."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


@dataclass
class _Budget:
    """What one stream has used so far."""

    expanded: int = 0
    aliases: int = 0


def _measure(loader: Any, root: Node, bounds: Limits, used: _Budget) -> bool:
    """Check one composed document against the limits before it is constructed; True when it
    is plain (no alias, no merge key), so `_build` may construct it.

    Each distinct node is visited once; `done` keeps its expanded size (about its JSON size)
    and height, so a node reached again through an alias is accounted for without walking it
    again. Depth is the position on the current path plus the height below, which is the depth
    the node has in the expanded document.
    """
    done: dict[int, tuple[int, int]] = {}
    path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    aliases, merges = used.aliases, False
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            path.discard(key)
            size, height = 2, 0
            for child in _children(node):
                child_size, child_height = done[id(child)]
                size += child_size + 1
                height = max(height, child_height)
            done[key] = (size, height + 1)
            if size > bounds.input_bytes:
                raise _Refused(_expansion(bounds), node.start_mark)
            continue
        if key in done:
            used.aliases += 1
            if used.aliases > bounds.aliases:
                raise _Refused(
                    f"more than {bounds.aliases} YAML aliases (LADING_MAX_ALIASES)",
                    node.start_mark,
                )
            if len(path) + done[key][1] > bounds.depth:
                raise _Refused(_too_deep(bounds), node.start_mark)
            continue
        if key in path:
            raise _Refused("a YAML alias refers to a node that contains it", node.start_mark)
        if isinstance(node, ScalarNode):
            done[key] = (len(node.value) + 2, 0)
            continue
        if len(path) >= bounds.depth:
            raise _Refused(_too_deep(bounds), node.start_mark)
        if isinstance(node, MappingNode):
            merges = _check_keys(loader, node) or merges
        path.add(key)
        stack.append((node, True))
        # Reversed, so children are visited in document order: an anchor is measured where
        # it is defined and errors point at the first offending line.
        stack.extend((child, False) for child in reversed(list(_children(node))))
    used.expanded += done[id(root)][0]
    if used.expanded > bounds.input_bytes:
        raise _Refused(_expansion(bounds), root.start_mark)
    return used.aliases == aliases and not merges


def _expansion(bounds: Limits) -> str:
    return (
        f"expands through its YAML aliases to more than {size_text(bounds.input_bytes)} "
        "(LADING_MAX_INPUT_BYTES)"
    )


def _too_deep(bounds: Limits) -> str:
    return f"nested deeper than {bounds.depth} levels (LADING_MAX_DEPTH)"


def _check_keys(loader: Any, node: MappingNode) -> bool:
    """Keys are scalars (JSON has no other kind) and appear once. Keys are compared as
    constructed (`1` and `0x1` are the same key), as the strings they become. True when the
    mapping has a merge key."""
    seen: dict[str, Node] = {}
    merges = False
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            merges = True
            continue
        if not isinstance(key_node, ScalarNode):
            raise _Refused("a mapping key must be a string, not a collection", key_node.start_mark)
        key = key_node.value if key_node.tag == _STR else _json_key(_scalar(loader, key_node))
        first = seen.get(key)
        if first is not None:
            raise _Refused(
                f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return merges


def _build(loader: Any, node: Node) -> Any:
    """A plain document (measured: no aliases, no merge keys, unique scalar keys, within the
    depth limit) constructed in one walk: PyYAML's general constructor spends most of a parse
    on bookkeeping such a document does not need. Any other tag goes through the loader's
    own constructors (and their errors)."""
    if isinstance(node, ScalarNode):
        return node.value if node.tag == _STR else _scalar(loader, node)
    if isinstance(node, MappingNode) and node.tag == _MAP:
        return {key.value if key.tag == _STR else _json_key(_scalar(loader, key)):
                _build(loader, value) for key, value in node.value}
    if isinstance(node, SequenceNode) and node.tag == _SEQ:
        return [_build(loader, child) for child in node.value]
    return loader.construct_object(node, deep=True)


def _scalar(loader: Any, node: ScalarNode) -> Any:
    constructors = loader.yaml_constructors
    return (constructors.get(node.tag) or constructors[None])(loader, node)


class _Irregular(Exception):
    """A tree `_tree` leaves to `_measure` and the general constructors."""


def _tree(loader: Any, root: Node, bounds: Limits, used: _Budget) -> Any:
    """A document of a stream that defines no anchor, so one without aliases: a tree, which
    one walk checks against the limits and builds. It measures what `_measure` measures (the
    expanded size, depth, unique scalar keys) and builds what `_build` builds. Anything else
    (too deep or too big, a duplicate, merge or collection key, a tag other than the plain
    ones, a value that cannot be constructed) raises _Irregular, and the caller goes the
    general way, whose checks come first and report the first problem in document order."""
    depth_limit = bounds.depth
    size = -1  # each node adds its own size and the 1 its parent counts for it; the root has none

    def build(node: Any, depth: int) -> Any:
        nonlocal size
        kind = type(node)
        if kind is ScalarNode:
            size += len(node.value) + 3
            return node.value if node.tag == _STR else _scalar(loader, node)
        if depth >= depth_limit:
            raise _Irregular
        size += 3
        if kind is MappingNode and node.tag == _MAP:
            mapping: dict[str, Any] = {}
            for key, value in node.value:
                if type(key) is not ScalarNode or key.tag == _MERGE:
                    raise _Irregular
                size += len(key.value) + 3
                name = key.value if key.tag == _STR else _json_key(_scalar(loader, key))
                mapping[name] = build(value, depth + 1)
            if len(mapping) != len(node.value):
                raise _Irregular  # a duplicate key
            return mapping
        if kind is SequenceNode and node.tag == _SEQ:
            return [build(child, depth + 1) for child in node.value]
        raise _Irregular

    try:
        document = build(root, 0)
    except (yaml.YAMLError, ValueError, OverflowError):
        raise _Irregular from None
    if used.expanded + size > bounds.input_bytes:
        raise _Irregular
    used.expanded += size
    return document


def _document(loader: Any, node: Node, bounds: Limits, used: _Budget, *, trees: bool) -> Any:
    if trees:
        try:
            return _tree(loader, node, bounds, used)
        except _Irregular:
            pass
    plain = _measure(loader, node, bounds, used)
    return _build(loader, node) if plain else loader.construct_document(node)


def load_yaml_stream(text: str | bytes, where: str) -> list[Any]:
    """Every document of a YAML stream (None for an empty one), each checked against the
    limits before it is constructed. Errors are InputErrors naming `where`, the line and the
    column."""
    bounds = limits()
    if len(text) > bounds.input_bytes:
        raise too_big(where, len(text), bounds.input_bytes, "LADING_MAX_INPUT_BYTES")
    if isinstance(text, bytes):
        text = decode(text, where)
    documents: list[Any] = []
    used = _Budget()
    # An alias names an anchor defined before it in its document, and an anchor is written
    # `&name`: with no `&` in the text, every document is a tree, and `_tree` checks and
    # builds it in one walk, in a third of the time of two. kustomize and helm never write
    # anchors; a `&` inside a string (`a && b`) only sends its stream the general way.
    trees = "&" not in text
    loader = _Loader(text)
    try:
        while loader.check_node():
            if len(documents) >= bounds.documents:
                raise InputError(
                    f"{where}: more than {bounds.documents} YAML documents (LADING_MAX_DOCUMENTS)"
                )
            documents.append(_document(loader, loader.get_node(), bounds, used, trees=trees))
    except _Refused as e:
        raise InputError(f"{where}:{_at(e.mark)}: {e.problem}") from None
    except yaml.reader.ReaderError as e:
        code = e.character if isinstance(e.character, int) else ord(e.character or "\0")
        raise InputError(
            f"{where}: invalid YAML: character #x{code:04x} at position {e.position} is not "
            "allowed in YAML (binary data or a control character)"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise InputError(f"{where}:{_at(mark)}: invalid YAML: {problem}") from None
    except RecursionError:  # only the pure-Python fallback parser recurses per level
        raise InputError(f"{where}: {_too_deep(bounds)}") from None
    except MemoryError:
        raise InputError(f"{where}: too large to parse in the memory available") from None
    except (ValueError, OverflowError) as e:  # e.g. an integer of 5,000 digits
        raise InputError(
            f"{where} (document {len(documents) + 1}): invalid value: {_value_problem(e)}"
        ) from None
    finally:
        loader.dispose()
    return documents


def _value_problem(error: Exception) -> str:
    # Python refuses to convert integers of more than 4,300 digits (CVE-2020-10735).
    if "integer string conversion" in str(error):
        return "an integer with thousands of digits"
    return str(error)


def _at(mark: Any) -> str:
    return f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def load_yaml(text: str | bytes, where: str) -> Any:
    """A single YAML document (None when the text holds none)."""
    documents = load_yaml_stream(text, where)
    if len(documents) > 1:
        raise InputError(f"{where}: expected one YAML document, found {len(documents)}")
    return documents[0] if documents else None

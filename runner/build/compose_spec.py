"""Reading a compose file the way compose does, and validating it against the compose
specification's own JSON Schema.

YAML: compose reads YAML 1.2, where `22:22` is a string and `yes` is not a boolean; PyYAML's
YAML 1.1 would turn the port mapping `22:22` into the number 1342. The text is first read
through plans.documents (its size, depth and alias limits and duplicate-key checks), then
constructed again with YAML 1.2's core schema.

Schema: `schemas/compose-spec.json` is the compose specification's JSON Schema as the
reference implementation ships it (Go module github.com/compose-spec/compose-go/v2 v2.17.0,
schema/compose-spec.json, Apache-2.0), vendored byte for byte; see schemas/ORIGIN.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import yaml

from plans.documents import load_yaml
from runner.common.errors import InputError

SCHEMA_FILE = Path(__file__).with_name("schemas") / "compose-spec.json"
SCHEMA_ORIGIN = "compose-go v2.17.0 schema/compose-spec.json"
MAX_ERRORS = 10

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Yaml12Loader(_Base):  # type: ignore[misc]
    """SafeLoader with YAML 1.2's core schema: booleans are true/false only, integers are
    decimal or 0x hex (no sexagesimal, no 0-prefixed octal), timestamps stay strings."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {}


def _resolve(tag: str, pattern: str, first: list[str]) -> None:
    _Yaml12Loader.add_implicit_resolver(tag, re.compile(pattern), first)


_resolve("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF"))
_resolve("tag:yaml.org,2002:int", r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$",
         list("-+0123456789"))
_resolve("tag:yaml.org,2002:float",
         r"^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+(?=[eE]))(?:[eE][-+]?[0-9]+)?$",
         list("-+0123456789."))
_resolve("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""])
_resolve("tag:yaml.org,2002:merge", r"^(?:<<)$", ["<"])


def load_compose(text: str, where: str) -> dict[str, Any]:
    load_yaml(text, where)  # limits, duplicate keys, and the error messages users know
    document = yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(document, dict):
        raise InputError(f"{where}: a compose file is a mapping with `services:`")
    return document


@functools.cache
def _validator() -> Any:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate_compose(document: dict[str, Any], where: str) -> None:
    """Refuse a document the compose specification's schema refuses, naming the fields."""
    errors = _specific(list(_validator().iter_errors(document)))
    if not errors:
        return
    lines = [f"{_path(e.absolute_path)}: {_message(e)}" for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        lines.append(f"… and {len(errors) - MAX_ERRORS} more")
    raise InputError(
        f"{where} does not follow the compose specification:\n  " + "\n  ".join(lines),
        hint="the compose specification's JSON Schema decides what is valid "
        f"({SCHEMA_ORIGIN})",
    )


def _specific(errors: list[Any]) -> list[Any]:
    """The errors a person can act on: for "none of the alternatives matched", the closest
    alternative's own error; and no "unknown field" where a field below is invalid."""
    from jsonschema.exceptions import best_match

    def closest(error: Any) -> Any:
        if error.validator not in ("anyOf", "oneOf") or not error.context:
            return error
        deepest = max(len(c.absolute_path) for c in error.context)
        return closest(best_match(c for c in error.context if len(c.absolute_path) == deepest))

    out = [closest(e) for e in errors]
    invalid = {tuple(e.absolute_path) for e in out}
    kept = []
    for e in out:
        if e.validator == "unevaluatedProperties":
            here = tuple(e.absolute_path)
            # A failed subschema leaves all of its fields "unevaluated", known ones too: with an
            # error below, that error is the one to fix first.
            if any(len(p) > len(here) and p[: len(here)] == here for p in invalid):
                continue
        kept.append(e)
    return sorted(kept, key=lambda e: [str(p) for p in e.absolute_path])


def _unexpected(error: Any) -> list[str]:
    message: str = error.message
    if " does not match any of the regexes" in message:  # patternProperties: names first
        return re.findall(r"'([^']+)'", message.split(" does not match", 1)[0])
    return re.findall(r"'([^']+)'", message.split("(", 1)[-1])


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _message(error: Any) -> str:
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        unexpected = _unexpected(error)
        if unexpected:
            return "unknown field " + ", ".join(repr(u) for u in unexpected)
    message: str = error.message
    return message if len(message) <= 200 else message[:200] + "…"

"""Compose variable interpolation and `.env` files, as the compose specification defines them.

    $VAR  ${VAR}            the value, or "" when unset
    ${VAR:-default}         default when unset or empty     ${VAR-default}   when unset
    ${VAR:?message}         error when unset or empty       ${VAR?message}   when unset
    ${VAR:+replacement}     replacement when set, non-empty ${VAR+replacement} when set
    $$                      a literal $

Defaults and replacements may themselves hold variables (`${A:-${B}}`). Pure: the variables
come in as a mapping, and every name that was looked up is reported, so the build can record
which ones it read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.common.errors import InputError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(Exception):
    """A `${VAR:?message}` whose variable is missing, or a malformed expression."""


@dataclass
class Lookups:
    """The variable names an interpolation read, and those it found unset."""

    names: set[str] = field(default_factory=set)
    unset: set[str] = field(default_factory=set)

    def get(self, variables: Mapping[str, str], name: str) -> str | None:
        self.names.add(name)
        value = variables.get(name)
        if value is None:
            self.unset.add(name)
        return value


def interpolate(text: str, variables: Mapping[str, str], seen: Lookups | None = None) -> str:
    seen = seen if seen is not None else Lookups()
    out, _ = _expand(text, 0, variables, seen, stop_at_brace=False)
    return out


def _expand(
    text: str, i: int, variables: Mapping[str, str], seen: Lookups, *, stop_at_brace: bool
) -> tuple[str, int]:
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if stop_at_brace and c == "}":
            return "".join(out), i
        if c != "$":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            value, i = _braced(text, i + 2, variables, seen)
            out.append(value)
        else:
            match = _NAME.match(text, i + 1)
            if match is None:
                # A lone `$` (before a space, a digit, the end) is kept, as compose does.
                out.append("$")
                i += 1
                continue
            out.append(seen.get(variables, match.group()) or "")
            i = match.end()
    if stop_at_brace:
        raise InterpolationError("a `${` is never closed")
    return "".join(out), i


def _braced(
    text: str, i: int, variables: Mapping[str, str], seen: Lookups
) -> tuple[str, int]:
    match = _NAME.match(text, i)
    if match is None:
        raise InterpolationError(f"invalid variable name after `${{` in {text!r}")
    name = match.group()
    i = match.end()
    value = seen.get(variables, name)
    if i < len(text) and text[i] == "}":
        return value or "", i + 1
    for operator in (":-", ":?", ":+", "-", "?", "+"):
        if text.startswith(operator, i):
            break
    else:
        raise InterpolationError(f"invalid expression after ${{{name} in {text!r}")
    argument, end = _expand(text, i + len(operator), variables, seen, stop_at_brace=True)
    empty_counts = operator.startswith(":")
    unset = value is None or (empty_counts and value == "")
    kind = operator[-1]
    if kind == "-":
        result = argument if unset else value or ""
    elif kind == "?":
        if unset:
            raise InterpolationError(
                f"required variable {name} is {'unset or empty' if empty_counts else 'unset'}"
                + (f": {argument}" if argument else "")
            )
        result = value or ""
    else:
        result = "" if unset else argument
    return result, end + 1


def interpolate_tree(
    value: Any, variables: Mapping[str, str], where: str, seen: Lookups, path: str = ""
) -> Any:
    """Every string value in a parsed compose document interpolated (keys are not, as in
    compose); an error names the file and the field."""
    if isinstance(value, str):
        try:
            return interpolate(value, variables, seen)
        except InterpolationError as e:
            raise InputError(f"{where}: {path or '(top level)'}: {e}") from None
    if isinstance(value, dict):
        return {
            k: interpolate_tree(v, variables, where, seen, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate_tree(v, variables, where, seen, f"{path}[{n}]")
                for n, v in enumerate(value)]
    return value


_ENV_LINE = re.compile(
    r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*(?:=(?P<value>.*))?$"
)


def parse_env_file(
    text: str, where: str, variables: Mapping[str, str], seen: Lookups
) -> dict[str, str | None]:
    """A `.env` file: KEY=VALUE lines, `#` comments, optional `export `; single-quoted values
    are literal, double-quoted ones take \\n escapes, and unquoted and double-quoted values are
    interpolated with `variables` and the keys above them. A bare `KEY` has no value (None)."""
    values: dict[str, str | None] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise InputError(f"{where}:{number}: expected KEY=VALUE, got {_shorten(line)!r}")
        key, value = match["key"], match["value"]
        if value is None:
            values[key] = None
            continue
        known = {**variables, **{k: v for k, v in values.items() if v is not None}}
        try:
            values[key] = _env_value(value.strip(), known, seen)
        except InterpolationError as e:
            raise InputError(f"{where}:{number}: {key}: {e}") from None
    return values


def _env_value(value: str, variables: Mapping[str, str], seen: Lookups) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        return interpolate(inner, variables, seen)
    # An unquoted value ends at an inline comment (` #`).
    value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
    return interpolate(value, variables, seen)


def _shorten(text: str) -> str:
    # Never echo a whole line: it may hold a secret value after a typo.
    key = text.split("=", 1)[0]
    return key[:40] + ("=…" if "=" in text else "")

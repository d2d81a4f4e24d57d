"""Keeping Secret values out of everything lading prints.

The API server quotes the values it rejects: `Invalid value: "…"` in validation errors, the Go
struct `&value.valueUnstructured{Value:…}` when an apply patch has the wrong type (a number
under `stringData`), and whatever an admission policy's `messageExpression` puts in its
message. When the object sent was a Secret, such a message may carry secret material, so every
error about a Secret is redacted twice before anyone sees it: each value the Secret holds is
replaced wherever it appears (as sent, JSON-escaped, base64-encoded and decoded), and so is
whatever follows the patterns the server uses to quote a value.

Pure functions; `runner.common.kube` applies them to every failed request that sent a Secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

MASK = "***"

# A shorter value would be replaced inside ordinary words of the message, making it unreadable
# while protecting next to nothing; short values are still masked where the server quotes them.
MIN_LITERAL = 4

# `Invalid value: "x"` (field.Invalid), `value: x`, and Go's `%#v`/`%+v` of a struct with a
# Value field (`{Value:8675309123}`), which is how the typed-patch error shows a bad value.
_QUOTED_VALUE = re.compile(r"\b(?:[Vv]alue: |Value:)")

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = set(_OPEN.values())


def secret_values(obj: dict[str, Any]) -> list[str]:
    """Every form in which a value under `data`/`stringData` of a Secret may show up in a
    message, longest first (so a value is replaced before a part of it is)."""
    forms: set[str] = set()
    for key in ("data", "stringData"):
        for leaf in _leaves(obj.get(key)):
            forms.update(_forms(leaf, encoded=key == "data"))
    return sorted((f for f in forms if len(f) >= MIN_LITERAL), key=lambda f: (-len(f), f))


def _leaves(value: Any) -> Iterator[Any]:
    """Scalar leaves of a JSON value; a mapping or list under a key is walked, since the server
    prints it whole when it rejects its type."""
    if isinstance(value, dict):
        for child in value.values():
            yield from _leaves(child)
    elif isinstance(value, list):
        for child in value:
            yield from _leaves(child)
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        yield value


def _forms(leaf: str | int | float, *, encoded: bool) -> set[str]:
    text = leaf if isinstance(leaf, str) else json.dumps(leaf)
    forms = {text, json.dumps(text)[1:-1], base64.b64encode(text.encode()).decode()}
    if encoded and isinstance(leaf, str):
        try:
            decoded = base64.b64decode(leaf, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        if decoded:
            forms.update({decoded, json.dumps(decoded)[1:-1]})
    return {f.strip() for f in forms if f.strip()}


def redact(text: str, values: list[str]) -> str:
    """`text` with each of `values` (from `secret_values`) and every server-quoted value
    replaced by ***."""
    for value in values:
        text = text.replace(value, MASK)
    return _redact_quoted(text)


def _redact_quoted(text: str) -> str:
    out: list[str] = []
    position = 0
    for match in _QUOTED_VALUE.finditer(text):
        if match.start() < position:
            continue  # inside a value already masked
        end = _value_end(text, match.end())
        out.append(text[position : match.end()])
        quoted = match.end() < len(text) and text[match.end()] == '"'
        out.append(f'"{MASK}"' if quoted else MASK)
        position = end
    out.append(text[position:])
    return "".join(out)


def _value_end(text: str, start: int) -> int:
    """Where a value printed by Go at `start` ends: after its closing quote for a quoted
    string; else at the first `: `, `, `, `;`, line end or unbalanced closing bracket outside
    any brackets or quotes (so `map[string]interface {}{"k":"v"}` is one value)."""
    if start < len(text) and text[start] == '"':
        return _string_end(text, start)
    depth: list[str] = []
    i = start
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _string_end(text, i)
            continue
        if char in _OPEN:
            depth.append(_OPEN[char])
        elif char in _CLOSE:
            if not depth:
                return i
            if depth[-1] == char:
                depth.pop()
        elif not depth and (char in ";\n" or (char in ":," and text[i + 1 : i + 2] == " ")):
            return i
        i += 1
    return i


def _string_end(text: str, start: int) -> int:
    """Index after the closing quote of the Go-quoted string opening at `start`."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    return i

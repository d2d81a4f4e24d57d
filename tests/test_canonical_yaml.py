"""The canonical YAML stream is the same bytes whichever emitter writes it: libyaml's (fast)
where it agrees with PyYAML's, PyYAML's where it would not."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from runner.common import objects

STRINGS = ["", " lead", "trail ", "multi\nline\n", "no\ntrailing", "tab\there", "ünïcödé",
           "yes", "on", "0x1f", "1e3", "- dash", ": colon", "#hash", "'q'", '"dq"', "a" * 300,
           "x: y", "null", "~", "@at", "`bt", "%pct", "line\n  indented\n", "\ttab start\n",
           "trailing spaces  \nx", "a\r\nb", "\u2028sep", "\ufeffbom", "\ue000", "\ufffd",
           "NEL \x85 inside", "emoji 😀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 keys"]


def pure(obj: Any) -> str:
    return "---\n" + yaml.dump(obj, Dumper=objects._CanonicalDumper, sort_keys=False,
                               default_flow_style=False, allow_unicode=True, width=1 << 20)


@pytest.mark.parametrize("text", STRINGS)
def test_every_string_dumps_to_the_same_bytes_as_the_pure_python_emitter(text: str) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
           "data": {"value": text, text or "empty": "key"}}
    assert objects.dump_stream([obj]) == pure(obj)
    assert yaml.safe_load(objects.dump_stream([obj])) == obj

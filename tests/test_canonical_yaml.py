"""The canonical YAML stream is the same bytes whichever emitter writes it: libyaml's (fast)
where it agrees with PyYAML's, PyYAML's where it would not."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.common import objects

STRINGS = ["", " lead", "trail ", "multi\nline\n", "no\ntrailing", "tab\there", "ünïcödé",
           "yes", "on", "0x1f", "1e3", "- dash", ": colon", "#hash", "'q'", '"dq"', "a" * 300,
           "x: y", "null", "~", "@at", "`bt", "%pct", "line\n  indented\n", "\ttab start\n",
           "trailing spaces  \nx", "a\r\nb", "\u2028sep", "\ufeffbom", "\ue000", "\ufffd",
           "NEL \x85 inside", "emoji 😀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 keys"]


class _Reference(yaml.SafeDumper):
    """PyYAML's own emitter and resolver, without the shortcuts objects' dumpers take."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Reference.add_representer(str, objects._str_representer)


def pure(obj: Any) -> str:
    return "---\n" + yaml.dump(obj, Dumper=_Reference, sort_keys=False,
                               default_flow_style=False, allow_unicode=True, width=1 << 20)


@pytest.mark.parametrize("text", STRINGS)
def test_every_string_dumps_to_the_same_bytes_as_the_pure_python_emitter(text: str) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
           "data": {"value": text, text or "empty": "key"}}
    assert objects.dump_stream([obj]) == pure(obj)
    assert yaml.safe_load(objects.dump_stream([obj])) == obj


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(STRINGS)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(STRINGS), children, max_size=4)
    ),
    max_leaves=30,
)


class _ReferenceC(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """libyaml's emitter with PyYAML's own resolver."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_ReferenceC.add_representer(str, objects._str_representer)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_the_dumpers_shortcuts_write_the_bytes_pyyamls_own_resolver_does(
    fields: dict[str, Any],
) -> None:
    obj = objects.normalise({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, **fields})
    assert objects._dump_with(obj, objects._FastDumper) == objects._dump_with(obj, _ReferenceC)
    assert objects._dump_with(obj, objects._CanonicalDumper) == objects._dump_with(obj, _Reference)

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


# Words from the characters YAML gives meaning to, and the texts YAML reads as other types.
words = st.text(alphabet="ab01_./:=+@ -#'\"!&*|>%?,[]{}~\t\n\\é", max_size=6) | st.sampled_from(
    ["80", "1:30", "yes", "Null", "=", "<<", "2001-12-14", "1.5", "0x1f", ".inf", "-", "a: b",
     "a:", "x" * 200, "k" * 129, "---x", "...x", "@x", "a #b"]
)
plain_values = st.recursive(
    words | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(words, children, max_size=3),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(words, plain_values, min_size=1, max_size=4))
def test_a_document_written_directly_is_the_bytes_both_emitters_write(obj: dict[str, Any]) -> None:
    try:
        text = objects._plain_dump(obj)
    except objects._NotPlain:
        return
    assert text == objects._dump_with(obj, objects._FastDumper)
    assert text == objects._dump_with(obj, objects._CanonicalDumper)


def test_manifest_like_documents_are_written_directly() -> None:
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": ""}},
        "spec": {"replicas": 2, "paused": False, "template": {"spec": {"containers": [
            {"name": "app", "image": "registry.example/app:1.0.0", "args": ["--port", "80"],
             "env": [{"name": "A", "value": "x y"}], "resources": {}, "ports": []},
        ]}}},
    }
    text = objects._plain_dump(deployment)
    assert "image: registry.example/app:1.0.0\n" in text
    assert "- '80'\n" in text
    assert text == objects._dump_with(deployment, objects._FastDumper)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(words, plain_values, min_size=1, max_size=5), max_size=3))
def test_the_canonical_stream_is_the_stream_of_the_normalised_objects(objs: list[Any]) -> None:
    normalised = [objects.normalise(obj) for obj in objs]
    assert objects.canonical_stream(objs) == objects.dump_stream(normalised)

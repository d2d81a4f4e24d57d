"""Property-based tests of the readers of untrusted input: whatever the bytes, the YAML, JSON,
plan, object, reference and layer readers return a value or raise lading's InputError, never
anything else (a TypeError or RecursionError would reach the user as an internal error).
Where a reader accepts its input, it reads back exactly the JSON value that was written."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plans import documents
from plans.build import BuildPlan
from plans.common import read_document, validate_document
from plans.documents import load_json, load_yaml_stream
from plans.install import InstallPlan, parse_duration
from runner.common.artifact import _Budget, _decompressed, _unpack_yaml
from runner.common.errors import InputError
from runner.common.objects import check_objects, parse_stream
from runner.common.reference import parse_ref

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=40,
)
# Text made of the characters YAML gives meaning to, so the parser's error paths are reached.
yaml_text = st.text(alphabet="&*[]{}:,-!|>'\"#%@`?\n\t <=.~0123456789abeknotuy\\", max_size=300)


def _only_input_errors(read: Any, *args: Any) -> Any:
    try:
        return read(*args)
    except InputError:
        return None


# -- YAML and JSON -------------------------------------------------------------------------------


@SETTINGS
@given(st.text(max_size=400) | yaml_text)
def test_any_text_is_read_as_yaml_or_refused_with_an_input_error(text: str) -> None:
    _only_input_errors(load_yaml_stream, text, "prop.yaml")


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_are_read_as_yaml_or_refused_with_an_input_error(data: bytes) -> None:
    _only_input_errors(load_yaml_stream, data, "prop.yaml")


@SETTINGS
@given(json_values)
def test_a_json_value_written_as_yaml_reads_back_unchanged(value: Any) -> None:
    text = yaml.safe_dump(value, allow_unicode=False)
    assert load_yaml_stream(text, "prop.yaml") == [value]


# Streams without an anchor, which load_yaml_stream reads in one walk per document.
tree_text = (
    st.text(alphabet="*[]{}:,-!|>'\"#%@`?\n\t <=.~0123456789abeknotuy\\", max_size=300)
    | st.lists(json_values, min_size=1, max_size=4).map(yaml.safe_dump_all)
    | st.lists(json_values, max_size=3).map(lambda docs: "a: 1\na: 2\n---\n" + yaml.safe_dump(docs))
).filter(lambda text: "&" not in text)


def _outcome(text: str) -> Any:
    try:
        return load_yaml_stream(text, "prop.yaml")
    except InputError as e:
        return ("refused", str(e), e.hint)


def _both_ways(text: str, limits: dict[str, str]) -> tuple[Any, Any]:
    """What reading `text` gives under `limits`: in one walk per tree, and in two (measured,
    then built)."""
    with mock.patch.dict(os.environ, limits):
        one_walk = _outcome(text)
        with mock.patch.object(documents, "_tree", side_effect=documents._Irregular):
            return one_walk, _outcome(text)


@SETTINGS
@given(tree_text, st.sampled_from(["1", "2", "3", "100"]), st.data())
def test_a_tree_read_in_one_walk_gives_what_measuring_then_building_gives(
    text: str, depth: str, data: st.DataObject
) -> None:
    # Sizes from the text's own (below it, the text itself is refused) to where expansion
    # (empty values, separators) could no longer reach.
    size = data.draw(st.integers(max(1, len(text)), 4 * len(text) + 20))
    one_walk, two_walks = _both_ways(
        text, {"LADING_MAX_DEPTH": depth, "LADING_MAX_INPUT_BYTES": str(size)}
    )
    assert one_walk == two_walks


@pytest.mark.parametrize(
    "text",
    [
        "[a, bb, {c: d}]",
        "{a, b, c}",
        "- \n- x\n-\n  - [y, '']\n",
        "a: [1, 2.5, ~, true]\n---\n[x, {y: z}]\n---\n",
        "k: |\n  two\n  lines\n\nn: 0x1f\n",
    ],
)
def test_the_one_walk_counts_the_expanded_size_as_measuring_does(text: str) -> None:
    for size in range(len(text), 4 * len(text) + 20):
        one_walk, two_walks = _both_ways(text, {"LADING_MAX_INPUT_BYTES": str(size)})
        assert one_walk == two_walks, size


@SETTINGS
@given(json_values)
def test_a_json_value_reads_back_unchanged(value: Any) -> None:
    assert load_json(json.dumps(value), "prop.json") == value


@SETTINGS
@given(st.text(max_size=400) | st.text(alphabet='{}[]",:0123456789.eE-+tfnul \\', max_size=300))
def test_any_text_is_read_as_json_or_refused_with_an_input_error(text: str) -> None:
    _only_input_errors(load_json, text, "prop.json")


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_are_read_as_json_or_refused_with_an_input_error(data: bytes) -> None:
    _only_input_errors(load_json, data, "prop.json")


# -- objects and plans ---------------------------------------------------------------------------

object_like = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": json_values,
        "kind": json_values,
        "metadata": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "name": json_values,
                "namespace": json_values,
                "labels": json_values,
                "annotations": json_values,
            },
        ),
        "items": st.lists(json_values, max_size=3),
        "data": json_values,
    },
)


@SETTINGS
@given(object_like)
def test_any_document_is_an_object_or_refused_with_an_input_error(document: Any) -> None:
    objects = _only_input_errors(parse_stream, yaml.safe_dump(document), "prop.yaml")
    if objects is not None:
        _only_input_errors(check_objects, [(o, "prop.yaml") for o in objects])


plan_fields = st.sampled_from(
    [
        "apiVersion", "kind", "artifact", "target", "namespace", "timeout", "prune", "adopt",
        "concurrency", "source", "to", "annotations", "metadata", "verify", "inventory",
    ]
)  # fmt: skip


@SETTINGS
@given(st.dictionaries(plan_fields, json_values, max_size=6) | json_values)
def test_any_plan_document_validates_or_is_refused_with_an_input_error(document: Any) -> None:
    for model in (InstallPlan, BuildPlan):
        _only_input_errors(validate_document, model, document, "plan")


@SETTINGS
@given(st.text(max_size=400) | yaml_text)
def test_any_plan_text_is_read_or_refused_with_an_input_error(text: str) -> None:
    _only_input_errors(read_document, None, text)


@SETTINGS
@given(st.text(max_size=30))
def test_a_duration_is_a_number_of_seconds_from_zero_to_a_day_or_a_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert 0 <= seconds <= 24 * 3600


# -- references ----------------------------------------------------------------------------------

reference_text = st.text(max_size=120) | st.builds(
    "{}/{}{}{}".format,
    st.sampled_from(["localhost:5000", "reg.example", "[::1]:80", "oci-layout:", "a.b:99999"]),
    st.text(alphabet="abcXYZ019._-/:@", max_size=30),
    st.sampled_from(["", ":", ":v1", ":välja", ":" + "v" * 129]),
    st.sampled_from(["", "@sha256:" + "a" * 64, "@sha256:" + "A" * 64, "@md5:00"]),
)


@SETTINGS
@given(reference_text)
def test_a_reference_parses_to_itself_or_is_refused_with_an_input_error(text: str) -> None:
    ref = _only_input_errors(parse_ref, text)
    if ref is not None:
        assert parse_ref(str(ref)) == ref
        assert str(ref).isascii() or ref.kind != "registry"


# -- layers --------------------------------------------------------------------------------------


def _read_layer(data: bytes) -> Any:
    return _unpack_yaml(_decompressed(data, "sha256:layer", _Budget(1 << 20)), "sha256:layer")


@SETTINGS
@given(st.binary(max_size=2000))
def test_any_layer_bytes_unpack_or_are_refused_with_an_input_error(data: bytes) -> None:
    _only_input_errors(_read_layer, data)
    _only_input_errors(_read_layer, gzip.compress(data, mtime=0))


member_names = st.text(min_size=1, max_size=40).filter(lambda n: "\0" not in n)


@SETTINGS
@given(
    st.lists(st.tuples(member_names, st.binary(max_size=200)), max_size=6),
    st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    st.booleans(),
)
def test_any_tar_of_files_unpacks_or_is_refused_with_an_input_error(
    members: list[tuple[str, bytes]], fmt: int, compress: bool
) -> None:
    buf = io.BytesIO()
    try:
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    except (ValueError, UnicodeError):  # names this tar format cannot hold
        return
    data = gzip.compress(buf.getvalue(), mtime=0) if compress else buf.getvalue()
    files = _only_input_errors(_read_layer, data)
    if files is not None:
        names = [name for name, _ in files]
        assert len(names) == len(set(names))


def test_the_depth_limit_counts_nested_collections() -> None:
    limit = "[" * 100 + "]" * 100
    assert load_yaml_stream(limit, "d.yaml")
    assert load_json(limit, "d.json")
    with pytest.raises(InputError, match="nested deeper than 100"):
        load_yaml_stream("[" + limit + "]", "d.yaml")
    with pytest.raises(InputError, match="nested deeper than 100"):
        load_json("[" + limit + "]", "d.json")

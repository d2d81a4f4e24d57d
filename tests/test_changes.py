"""Deciding created/configured/unchanged without a server. Pure functions, plain values; the
live objects mirror what kube-apiserver stores (defaults, managedFields with list keys)."""

from __future__ import annotations

import copy
from typing import Any

from runner.install.changes import classify, unchanged_without_dry_run

DESIRED: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
}

LIVE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {
        "name": "web", "namespace": "shop", "labels": {"app": "web"}, "uid": "u1",
        "resourceVersion": "7", "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [{
            "manager": "lading", "operation": "Apply", "apiVersion": "v1",
            "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:ports": {'k:{"port":80,"protocol":"TCP"}': {
                        ".": {}, "f:port": {}, "f:targetPort": {}}},
                    "f:selector": {},
                },
            },
        }],
    },
    "spec": {
        "clusterIP": "10.96.0.12", "type": "ClusterIP", "sessionAffinity": "None",
        "selector": {"app": "web"},
        "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
    },
    "status": {"loadBalancer": {}},
}


def test_unchanged_when_every_value_is_live_and_we_own_exactly_those_fields() -> None:
    assert unchanged_without_dry_run(DESIRED, LIVE, "lading")


def test_a_changed_value_needs_the_server() -> None:
    desired = copy.deepcopy(DESIRED)
    desired["spec"]["ports"][0]["targetPort"] = 9090
    assert not unchanged_without_dry_run(desired, LIVE, "lading")


def test_a_field_we_stop_setting_needs_the_server_even_though_values_match() -> None:
    # Dropping the label would remove it from the live object on apply.
    desired = copy.deepcopy(DESIRED)
    del desired["metadata"]["labels"]
    assert not unchanged_without_dry_run(desired, LIVE, "lading")


def test_a_field_we_start_setting_needs_the_server_even_when_already_live() -> None:
    desired = copy.deepcopy(DESIRED)
    desired["spec"]["sessionAffinity"] = "None"  # live has it, but we never owned it
    assert not unchanged_without_dry_run(desired, LIVE, "lading")


def test_another_managers_object_needs_the_server() -> None:
    assert not unchanged_without_dry_run(DESIRED, LIVE, "someone-else")
    assert not unchanged_without_dry_run(DESIRED, None, "lading")


def test_a_different_list_length_needs_the_server() -> None:
    desired = copy.deepcopy(DESIRED)
    desired["spec"]["ports"].append({"port": 443, "targetPort": 8443})
    assert not unchanged_without_dry_run(desired, LIVE, "lading")


def test_classify_ignores_server_bookkeeping_but_not_ownership() -> None:
    would_be = copy.deepcopy(LIVE)
    would_be["metadata"]["resourceVersion"] = "8"
    would_be["metadata"]["managedFields"][0]["time"] = "2026-02-02T00:00:00Z"
    assert classify(would_be, LIVE, "lading") == "unchanged"
    assert classify(would_be, None, "lading") == "created"
    taken = copy.deepcopy(would_be)
    taken["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:type"] = {}
    assert classify(taken, LIVE, "lading") == "configured"
    edited = copy.deepcopy(would_be)
    edited["spec"]["selector"] = {"app": "api"}
    assert classify(edited, LIVE, "lading") == "configured"


def _secret_live(data: dict[str, str], fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
        "metadata": {"name": "creds", "namespace": "shop", "uid": "u", "resourceVersion": "3",
                     "managedFields": [{"manager": "lading", "operation": "Apply",
                                        "apiVersion": "v1", "fieldsType": "FieldsV1",
                                        "fieldsV1": fields}]},
    }


def test_a_secret_s_string_data_is_compared_as_the_server_stores_it() -> None:
    desired = {"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "creds", "namespace": "shop"},
               "stringData": {"token": "s3cret"}}
    fields = {"f:stringData": {"f:token": {}}}
    stored = _secret_live({"token": "czNjcmV0"}, fields)  # base64("s3cret")
    assert unchanged_without_dry_run(desired, stored, "lading")
    # Edited out of band, another value under the same key: ask the server.
    assert not unchanged_without_dry_run(desired, _secret_live({"token": "b3RoZXI="}, fields),
                                         "lading")
    # Our applied set named another key: ask the server.
    assert not unchanged_without_dry_run(
        desired, _secret_live({"token": "czNjcmV0"}, {"f:stringData": {"f:old": {}}}), "lading")
    # A non-string stringData value is for the server to judge.
    numeric = {**desired, "stringData": {"token": 8675309}}
    assert not unchanged_without_dry_run(numeric, stored, "lading")


def test_string_data_wins_over_data_for_the_same_key_as_on_the_server() -> None:
    desired = {"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "creds", "namespace": "shop"},
               "data": {"token": "b2xk", "other": "eA=="}, "stringData": {"token": "s3cret"}}
    fields = {"f:data": {"f:token": {}, "f:other": {}}, "f:stringData": {"f:token": {}}}
    live = _secret_live({"token": "czNjcmV0", "other": "eA=="}, fields)
    assert unchanged_without_dry_run(desired, live, "lading")

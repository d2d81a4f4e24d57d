"""No Secret value in any output: the redaction function on the messages the API server really
writes, then every error path on the real apiserver with planted values, checked in the
exception, the InstallResult, and the CLI's stdout/stderr with `-o json` and `--log-format json`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plans.install import InstallPlan
from runner.common.kube import KubeClient, KubeError, Resource
from runner.common.redact import redact, secret_values
from runner.dev.endpoints import ClusterEndpoint
from runner.install.diff import diff
from runner.install.install import InstallFailed, install
from tests.artifacts import publish, unique
from tests.clirun import lading

SECRETS = Resource("", "v1", "Secret", "secrets", True)
POLICIES = Resource(
    "admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy",
    "validatingadmissionpolicies", False,
)
BINDINGS = Resource(
    "admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding",
    "validatingadmissionpolicybindings", False,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# The redaction function


def test_a_number_in_string_data_is_masked_in_the_typed_patch_error() -> None:
    secret = {"kind": "Secret", "stringData": {"pin": 8675309123}}
    message = (
        "failed to create typed patch object (/v1, Kind=Secret) ns/s: .stringData.pin: "
        "expected string, got &value.valueUnstructured{Value:8675309123}"
    )
    redacted = redact(message, secret_values(secret))
    assert "8675309123" not in redacted
    assert redacted.endswith("got &value.valueUnstructured{Value:***}")
    assert ".stringData.pin: expected string" in redacted


def test_a_mapping_value_is_masked_whole_and_its_nested_leaves_everywhere() -> None:
    secret = {"kind": "Secret", "stringData": {"db": {"user": "admin", "password": "s3cr3t-pw"}}}
    message = (
        ".stringData.db: expected string, got &value.valueUnstructured{Value:map[string]"
        'interface {}{"password":"s3cr3t-pw", "user":"admin"}}; also saw s3cr3t-pw'
    )
    redacted = redact(message, secret_values(secret))
    assert "s3cr3t-pw" not in redacted
    assert "admin" not in redacted
    assert redacted == (
        ".stringData.db: expected string, got &value.valueUnstructured{Value:***}; also saw ***"
    )


def test_data_values_are_masked_encoded_and_decoded_and_string_data_values_encoded() -> None:
    secret = {"kind": "Secret", "data": {"token": b64("tok-123456")},
              "stringData": {"pw": "letmein-42"}}
    values = secret_values(secret)
    for planted in ("tok-123456", b64("tok-123456"), "letmein-42", b64("letmein-42")):
        assert redact(f"before {planted} after", values) == "before *** after"


def test_json_escaped_forms_are_masked() -> None:
    secret = {"kind": "Secret", "stringData": {"pw": 'quo"te\\back'}}
    assert redact('got "quo\\"te\\\\back" here', secret_values(secret)) == 'got "***" here'


@pytest.mark.parametrize(("message", "expected"), [
    ('data[k]: Invalid value: "whatever": a valid config key must consist of alphanumerics',
     'data[k]: Invalid value: "***": a valid config key must consist of alphanumerics'),
    ('Invalid value: "with \\"escaped\\" quotes"', 'Invalid value: "***"'),
    ("spec.x: Invalid value: 12345: must be less than 10",
     "spec.x: Invalid value: ***: must be less than 10"),
    ('[a: Invalid value: map[string]string{"k":"v"}, b: Required value]',
     "[a: Invalid value: ***, b: Required value]"),
    ("the value: hunter22; retry", "the value: ***; retry"),
    ("got {Value:true}", "got {Value:***}"),
])
def test_values_the_server_quotes_are_masked_even_when_not_known(
    message: str, expected: str
) -> None:
    assert redact(message, []) == expected


def test_messages_without_values_are_left_alone() -> None:
    message = (
        'Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.password'
    )
    assert redact(message, secret_values({"data": {"password": b64("hunter22")}})) == message


def test_short_values_are_not_replaced_inside_words() -> None:
    # "ok" would otherwise turn "token" into "t***en"; it is still masked where quoted.
    values = secret_values({"stringData": {"flag": "ok"}})
    assert redact('token: Invalid value: "ok"', values) == 'token: Invalid value: "***"'


def test_a_kube_error_is_redacted_in_its_message_and_causes() -> None:
    error = KubeError(
        422, "Invalid", 'Secret "s" is invalid: data[k]: Invalid value: "x": p4ssw0rd!',
        [{"field": "data[k]", "reason": "FieldValueInvalid",
          "message": 'Invalid value: "x": p4ssw0rd!'}],
        {"name": "s", "kind": "secrets", "causes": []},
    )
    redacted = error.redacted(secret_values({"stringData": {"k": "p4ssw0rd!"}}))
    assert "p4ssw0rd!" not in str(redacted)
    assert "p4ssw0rd!" not in json.dumps(redacted.causes)
    assert "p4ssw0rd!" not in json.dumps(redacted.details)
    assert (redacted.status, redacted.reason, redacted.is_invalid) == (422, "Invalid", True)
    assert redacted.causes[0]["field"] == "data[k]"


# On the real apiserver: every path an error about a Secret takes to the user


def make_plan(ref: str, ns: str, cluster: ClusterEndpoint, **fields: Any) -> InstallPlan:
    return InstallPlan.model_validate({
        "artifact": {"ref": ref}, "target": {"kubeconfig": str(cluster.kubeconfig)},
        "namespace": ns, "inventory": "app", "wait": False, **fields,
    })


def secret(ns: str, name: str = "creds", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns}, **fields}


def assert_nowhere(texts: dict[str, str], *planted: str) -> None:
    for value in planted:
        for form in (value, b64(value)):
            for where, text in texts.items():
                assert form not in text, f"{form!r} leaked into the {where}:\n{text}"


def failed_install_everywhere(
    tmp_path: Path, ns: str, cluster: ClusterEndpoint, objects: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    reset: Callable[[], None] = lambda: None, flags: tuple[str, ...] = (), **fields: Any,
) -> dict[str, str]:
    """Install `objects` (expected to fail) through the library and the CLI, with json and text
    output, and return every text a user could see, by where it was seen."""
    ref = publish(objects, f"oci-layout:{tmp_path / unique('art')}:v1")
    texts: dict[str, str] = {}
    reset()
    with pytest.raises(InstallFailed) as failure:
        install(make_plan(ref, ns, cluster, **fields), progress=lambda m: texts.update(
            progress=texts.get("progress", "") + m + "\n"))
    texts["exception"] = f"{failure.value}\n{failure.value.args!r}"
    texts["result"] = failure.value.result.model_dump_json()
    common = ["install", ref, "-n", ns, "--inventory", "app", "--no-wait", "-v", *flags,
              "--kubeconfig", str(cluster.kubeconfig)]
    for output in (["-o", "json", "--log-format", "json"], ["-o", "text"]):
        reset()
        ran = lading(capsys, monkeypatch, *common, *output)
        assert ran.code in (1, 2), ran.err
        texts[f"stdout of {output}"] = ran.out
        texts[f"stderr of {output}"] = ran.err
    result = json.loads(texts["stdout of ['-o', 'json', '--log-format', 'json']"])
    assert result["status"] == "failed"
    texts["error"] = result["error"]
    return texts


def direct_error(kube: KubeClient, obj: dict[str, Any], **options: Any) -> str:
    """The KubeError the client raises for `obj`, as everything it carries."""
    with pytest.raises(KubeError) as raised:
        kube.apply(SECRETS, obj, field_manager="lading", **options)
    e = raised.value
    return json.dumps([str(e), repr(e.args), e.message, e.causes, e.details])


@pytest.mark.cluster
def test_a_number_in_string_data_is_refused_without_showing_it(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = secret(ns, stringData={"pin": 8675309123})
    texts = failed_install_everywhere(tmp_path, ns, control_plane, [bad], capsys, monkeypatch)
    texts["KubeError"] = direct_error(kube, bad, dry_run=True)
    assert "invalid: .stringData.pin: expected string, got ***" in texts["error"]
    assert_nowhere(texts, "8675309123")


@pytest.mark.cluster
def test_a_mapping_in_string_data_is_refused_without_showing_what_is_inside(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = secret(ns, stringData={"db": {"user": "dbadmin-77", "password": "Tr0ub4dor&3"}})
    texts = failed_install_everywhere(tmp_path, ns, control_plane, [bad], capsys, monkeypatch)
    texts["KubeError"] = direct_error(kube, bad, dry_run=True)
    assert "invalid: .stringData.db: expected string, got ***" in texts["error"]
    assert_nowhere(texts, "dbadmin-77", "Tr0ub4dor&3")


@pytest.mark.cluster
def test_an_invalid_key_is_named_but_its_value_is_not_shown(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = secret(ns, data={"bad key!": b64("opensesame-991")},
                 stringData={"also bad?": "sesame-street-42"})
    texts = failed_install_everywhere(tmp_path, ns, control_plane, [bad], capsys, monkeypatch)
    texts["KubeError"] = direct_error(kube, bad, dry_run=True)
    # Both keys are named; the server lists its causes in no fixed order.
    assert "invalid: " in texts["error"]
    assert "data[bad key!]" in texts["error"]
    assert "also bad?" in texts["error"]
    assert "a valid config key must consist of" in texts["error"]
    assert_nowhere(texts, "opensesame-991", "sesame-street-42")


@pytest.mark.cluster
def test_changing_an_immutable_secret_fails_without_showing_either_value(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = secret(ns, immutable=True, stringData={"token": "first-value-1111"})
    install(make_plan(publish([first], f"oci-layout:{tmp_path / 'v1'}:v1"), ns, control_plane))
    changed = secret(ns, immutable=True, stringData={"token": "second-value-2222"})
    texts = failed_install_everywhere(tmp_path, ns, control_plane, [changed], capsys, monkeypatch)
    texts["KubeError"] = direct_error(kube, changed)
    assert "field is immutable when `immutable` is set" in texts["error"]
    assert "--recreate-on-immutable" in texts["error"]
    assert_nowhere(texts, "first-value-1111", "second-value-2222")


@pytest.mark.cluster
def test_a_conflict_over_a_secret_key_names_the_manager_but_no_value(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube.apply(SECRETS, secret(ns, data={"password": b64("their-pass-3141")}),
               field_manager="kubectl-edit")
    ours = secret(ns, data={"password": b64("our-pass-2718")})
    texts = failed_install_everywhere(tmp_path, ns, control_plane, [ours], capsys, monkeypatch)
    texts["KubeError"] = direct_error(kube, ours)
    assert "kubectl-edit owns .data.password" in texts["error"]
    assert_nowhere(texts, "their-pass-3141", "our-pass-2718")


@pytest.fixture
def deny_labelled_secrets(kube: KubeClient, ns: str) -> Iterator[str]:
    """A ValidatingAdmissionPolicy refusing Secrets labelled `lading-test-deny` in `ns`, whose
    message quotes the Secret's `pin` (as a careless policy author might). Yields the label."""
    name = unique("deny-labelled-secrets")
    kube.apply(POLICIES, {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"],
                "operations": ["CREATE", "UPDATE"]}]},
            "matchConditions": [{
                "name": "labelled",
                "expression": "has(object.metadata.labels) && "
                              "'lading-test-deny' in object.metadata.labels"}],
            "validations": [{
                "expression": "false",
                "message": "secrets labelled lading-test-deny are refused here",
                "messageExpression": "'secrets labelled lading-test-deny are refused here; "
                                     "this one holds pin=' + string(object.data.pin)",
            }],
        },
    }, field_manager="test-setup")
    kube.apply(BINDINGS, {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {
                     "matchLabels": {"kubernetes.io/metadata.name": ns}}}},
    }, field_manager="test-setup")
    try:
        # The apiserver picks a new policy up asynchronously: wait until it denies.
        probe = secret(ns, "probe", data={"pin": b64("probe")})
        probe["metadata"]["labels"] = {"lading-test-deny": "yes"}
        deadline = time.monotonic() + 30
        while True:
            try:
                kube.apply(SECRETS, probe, field_manager="test-setup", dry_run=True)
            except KubeError as e:
                if "refused here" in e.message:
                    break
                raise
            assert time.monotonic() < deadline, "the admission policy never took effect"
            time.sleep(0.5)
        yield "lading-test-deny"
    finally:
        kube.delete(BINDINGS, None, name)
        kube.delete(POLICIES, None, name)


@pytest.mark.cluster
def test_an_admission_denial_is_shown_without_the_value_its_message_quotes(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    deny_labelled_secrets: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    denied = secret(ns, data={"pin": b64("admission-pin-5150")})
    denied["metadata"]["labels"] = {deny_labelled_secrets: "yes"}
    texts = failed_install_everywhere(tmp_path, ns, control_plane, [denied], capsys, monkeypatch)
    texts["KubeError"] = direct_error(kube, denied, dry_run=True)
    assert "secrets labelled lading-test-deny are refused here" in texts["error"]
    assert "this one holds pin=" in texts["error"]
    assert_nowhere(texts, "admission-pin-5150")


@pytest.mark.cluster
def test_a_recreated_secret_the_server_refuses_is_not_shown(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    deny_labelled_secrets: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Delete-and-recreate sends the Secret again: an immutable Secret, recreated on request,
    whose new version the admission policy refuses."""
    first = secret(ns, immutable=True, data={"pin": b64("recreate-old-6060")})

    def reset() -> None:
        kube.delete(SECRETS, ns, "creds")
        kube.apply(SECRETS, first, field_manager="lading")

    changed = secret(ns, immutable=True, data={"pin": b64("recreate-new-7070")})
    changed["metadata"]["labels"] = {deny_labelled_secrets: "yes"}
    texts = failed_install_everywhere(
        tmp_path, ns, control_plane, [changed], capsys, monkeypatch, reset=reset,
        flags=("--recreate-on-immutable",), recreate_on_immutable=True)
    assert "refused here" in texts["error"]
    assert "apply failed" in texts["error"]  # not the preflight: the recreation itself
    assert_nowhere(texts, "recreate-old-6060", "recreate-new-7070")


@pytest.mark.cluster
def test_diff_of_a_drifted_secret_shows_the_drift_but_no_value(
    tmp_path: Path, ns: str, kube: KubeClient, control_plane: ClusterEndpoint,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours = secret(ns, data={"password": b64("installed-pass-8080")},
                  stringData={"api-key": "installed-key-4242"})
    ours["metadata"]["annotations"] = {"owner": "team-a"}
    ref = publish([ours], f"oci-layout:{tmp_path / 'art'}:v1")
    install(make_plan(ref, ns, control_plane))
    # Changed out of band the way `kubectl apply` does it, which also keeps a copy of what it
    # applied (values included) in an annotation.
    # A drifted annotation puts its neighbours, that copy among them, into the unified diff.
    theirs = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "creds", "namespace": ns, "annotations": {"owner": "team-b"}},
              "data": {"password": b64("drifted-pass-9090"), "api-key": b64("drifted-key-1717")}}
    kube.request("PATCH", SECRETS.object_path(ns, "creds"),
                 query={"fieldManager": "kubectl-client-side-apply"},
                 body={"data": theirs["data"], "metadata": {"annotations": {
                     "owner": "team-b",
                     "kubectl.kubernetes.io/last-applied-configuration": json.dumps(theirs)}}},
                 content_type="application/merge-patch+json")

    texts = {"report": diff(make_plan(ref, ns, control_plane), lambda _: None).model_dump_json()}
    for output in (["-o", "json", "--log-format", "json"], ["-o", "text"]):
        ran = lading(capsys, monkeypatch, "diff", ref, "-n", ns, "--inventory", "app", "-v",
                     *output, "--kubeconfig", str(control_plane.kubeconfig))
        assert ran.code == 1, ran.err
        texts[f"stdout of {output}"] = ran.out
        texts[f"stderr of {output}"] = ran.err

    report = json.loads(texts["stdout of ['-o', 'json', '--log-format', 'json']"])
    (creds,) = report["objects"]
    assert creds["state"] == "drifted"
    assert ".data.password" in {f["path"] for f in creds["fields"]}
    assert_nowhere(texts, "installed-pass-8080", "installed-key-4242", "drifted-pass-9090",
                   "drifted-key-1717")

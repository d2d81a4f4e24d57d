"""The Temporal layer without a server: the payload codec, failure classification, what submit
refuses before starting anything, the ship contract, and the progress sink's cancellation."""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload

from plans.errors import InputError
from plans.ship import RunRequest, ShipPlan
from runner.common.errors import OperationFailed, RemoteError
from runner.install.install import InstallFailed
from runner.worker.activities import ActivityProgress, WorkerSettings
from runner.worker.codec import (
    ENCODING,
    EncryptionCodec,
    load_keyring,
    new_key_entry,
    parse_keyring,
)
from runner.worker.failures import Cancelled, application_error
from runner.worker.submit import inline_secrets, workflow_input
from runner.worker.workflows import pinned

DIGEST = "sha256:" + "ab" * 32


def _payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


def _roundtrip(encoder: EncryptionCodec, decoder: EncryptionCodec, text: str) -> Payload:
    async def go() -> Payload:
        [sealed] = await encoder.encode([_payload(text)])
        assert sealed.metadata["encoding"] == ENCODING
        assert text.encode() not in sealed.data
        [opened] = await decoder.decode([sealed])
        return opened

    return asyncio.run(go())


def test_codec_encrypts_every_payload_and_decrypts_it_back() -> None:
    codec = EncryptionCodec(parse_keyring(new_key_entry("k1"), "test"))
    opened = _roundtrip(codec, codec, '{"token": "s3cr3t"}')
    assert opened == _payload('{"token": "s3cr3t"}')


def test_codec_keys_rotate_by_id_old_history_still_decrypts() -> None:
    old, new = new_key_entry("2024"), new_key_entry("2025")
    before = EncryptionCodec(parse_keyring(old, "test"))
    after = EncryptionCodec(parse_keyring(f"{new}\n{old}", "test"))
    assert _roundtrip(before, after, "written last year") == _payload("written last year")
    sealed = asyncio.run(after.encode([_payload("x")]))[0]
    assert sealed.metadata["encryption-key-id"] == b"2025"


def test_codec_refuses_an_unknown_key_id_and_a_tampered_payload() -> None:
    codec = EncryptionCodec(parse_keyring(new_key_entry("a"), "test"))
    other = EncryptionCodec(parse_keyring(new_key_entry("b"), "test"))
    sealed = asyncio.run(codec.encode([_payload("x")]))[0]
    with pytest.raises(InputError, match="codec key 'a'"):
        asyncio.run(other.decode([sealed]))
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(InputError, match="does not decrypt"):
        asyncio.run(codec.decode([sealed]))


def test_codec_passes_unencrypted_payloads_through_on_decode() -> None:
    codec = EncryptionCodec(parse_keyring(new_key_entry("a"), "test"))
    assert asyncio.run(codec.decode([_payload("plain")])) == [_payload("plain")]


def test_keyring_errors_name_the_entry_never_the_key() -> None:
    short = base64.b64encode(b"k" * 16).decode()
    with pytest.raises(InputError) as raised:
        parse_keyring(f"id1:{short}", "keys.txt")
    assert "16 bytes" in raised.value.message
    assert short not in str(raised.value)
    with pytest.raises(InputError, match="entry 1 is not ID:BASE64KEY"):
        parse_keyring("no-colon-here", "keys.txt")
    with pytest.raises(InputError, match="appears twice"):
        parse_keyring(f"{new_key_entry('x')},{new_key_entry('x')}", "keys.txt")


def test_keyring_comes_from_the_file_then_the_environment(tmp_path: Path) -> None:
    entry = new_key_entry("file")
    (tmp_path / "keys").write_text(f"# rotated 2025-01\n{entry}\n")
    from_file = load_keyring(None, {"LADING_CODEC_KEY_FILE": str(tmp_path / "keys"),
                                    "LADING_CODEC_KEY": new_key_entry("env")})
    assert from_file is not None
    assert from_file.current[0] == "file"
    from_env = load_keyring(None, {"LADING_CODEC_KEY": new_key_entry("env")})
    assert from_env is not None
    assert from_env.current[0] == "env"
    assert load_keyring(None, {}) is None


def _install_result(status: str = "failed") -> Any:
    from plans.install import InstallResult

    return InstallResult(digest=DIGEST, ref=f"r.example/app@{DIGEST}", inventory="app",
                         namespace="shop", status=status, error="wait failed")


def test_bad_input_is_final_unreachable_remotes_retry_failures_carry_the_result() -> None:
    bad = application_error(InputError("invalid InstallPlan"))
    assert (bad.type, bad.non_retryable) == ("InputError", True)
    remote = application_error(RemoteError("registry unreachable"))
    assert (remote.type, remote.non_retryable) == ("RemoteError", False)
    refused = application_error(OperationFailed("no signature satisfies the policy"))
    assert (refused.type, refused.non_retryable) == ("OperationFailed", True)
    failed = application_error(InstallFailed(_install_result()))
    assert (failed.type, failed.non_retryable) == ("InstallFailed", True)
    assert failed.details[0]["kind"] == "InstallResult"
    assert failed.details[0]["status"] == "failed"


def test_progress_sink_heartbeats_and_stops_the_runner_once_cancelled() -> None:
    stop, beats = threading.Event(), []
    sink = ActivityProgress(stop, beats.append, {"activity": "install"},
                            WorkerSettings(workspace=Path("."), encrypted=False,
                                           stream=open("/dev/null", "w")))  # noqa: SIM115
    sink("stage cluster: applying 3 of 3 objects")
    assert beats == ["stage cluster: applying 3 of 3 objects"]
    stop.set()
    with pytest.raises(Cancelled, match="stopped before: stage namespaced"):
        sink("stage namespaced: applying 2 of 2 objects")
    assert len(beats) == 1
    cancelled = application_error(Cancelled("cancelled"), {"objects": []})
    assert (cancelled.type, cancelled.non_retryable) == ("Cancelled", True)


def _install_plan(**target: Any) -> dict[str, Any]:
    return {"apiVersion": "lading.dev/v1", "kind": "InstallPlan",
            "artifact": {"ref": f"r.example/app@{DIGEST}"}, "namespace": "shop",
            "target": target}


def test_submit_wraps_a_single_plan_in_the_run_workflow_by_kind() -> None:
    workflow, request = workflow_input(_install_plan(), "plan.yaml")
    assert workflow == "run"
    assert RunRequest.model_validate(request).activity == "install"
    assert workflow_input(_install_plan(), "plan.yaml", "diff")[1]["activity"] == "diff"
    with pytest.raises(InputError, match="activity build takes a BuildPlan"):
        workflow_input(_install_plan(), "plan.yaml", "build")
    with pytest.raises(InputError, match=r"namespase: unknown field"):
        workflow_input({**_install_plan(), "namespase": "x"}, "plan.yaml")


def test_submit_finds_credentials_written_into_the_plan() -> None:
    by_reference = workflow_input(_install_plan(server="https://k:6443", token_file="/t"), "p")
    assert inline_secrets(*by_reference) == []
    inline = workflow_input(_install_plan(server="https://k:6443", token="abc"), "p")
    assert inline_secrets(*inline) == ["plan.target.token"]


def _ship(**extra: Any) -> dict[str, Any]:
    return {"apiVersion": "lading.dev/v1", "kind": "ShipPlan",
            "artifact": f"r.example/app@{DIGEST}",
            "environments": [{"name": "staging", "install": _install_plan()},
                             {"name": "prod", "approval": True, "task_queue": "prod",
                              "install": _install_plan(token="abc", server="https://k")}],
            **extra}


def test_ship_plan_needs_one_pinned_artifact_and_unique_environments() -> None:
    plan = ShipPlan.model_validate(_ship())
    assert [e.name for e in plan.environments] == ["staging", "prod"]
    assert inline_secrets("ship", _ship()) == ["environments.prod.install.target.token"]
    with pytest.raises(ValueError, match="pinned"):
        ShipPlan.model_validate(_ship(artifact="r.example/app:latest"))
    twice = _ship()
    twice["environments"][1]["name"] = "staging"
    with pytest.raises(ValueError, match="unique"):
        ShipPlan.model_validate(twice)


def test_each_environment_pulls_its_own_repository_at_the_shipped_digest() -> None:
    assert pinned("mirror.internal:5000/team/app:v1", DIGEST) == \
        f"mirror.internal:5000/team/app@{DIGEST}"
    assert pinned("r.example/app", DIGEST) == f"r.example/app@{DIGEST}"


def test_dev_env_exports_temporal_address_only_when_the_dev_server_runs(tmp_path: Path) -> None:
    from runner.dev import env as dev_env
    from runner.dev.endpoints import ClusterEndpoint, RegistryEndpoint, TemporalEndpoint

    environment = dev_env.DevEnvironment(
        state_dir=tmp_path,
        cluster=ClusterEndpoint(kubeconfig=tmp_path / "kubeconfig", server="https://127.0.0.1:1"),
        registry=RegistryEndpoint(host="127.0.0.1:5000"),
        processes=[],
        startup_seconds=1.0,
    )
    assert not any("TEMPORAL" in line for line in dev_env.shell_exports(environment))
    with_temporal = environment.model_copy(
        update={"temporal": TemporalEndpoint(address="127.0.0.1:7233")}
    )
    exports = dev_env.shell_exports(with_temporal)
    assert "export TEMPORAL_ADDRESS=127.0.0.1:7233" in exports
    assert "export TEMPORAL_NAMESPACE=default" in exports

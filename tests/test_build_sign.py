"""`lading build --sign` fails before pushing when signing cannot happen, so a signed build
never leaves an unsigned artifact behind for lack of an identity or a trust root."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.cli import main
from tests.test_supply_verify import _token


def _build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s\ndata:\n  a: b\n")
    with pytest.raises(SystemExit) as exited:
        main(["build", "--inline", str(manifest), "--to", f"oci-layout:{tmp_path}/out:v1",
              "--sign"])
    code = exited.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def test_build_sign_without_an_identity_is_bad_input_and_pushes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    code, err = _build(tmp_path, capsys)
    assert code == 2
    assert "no OIDC identity token" in err
    assert not (tmp_path / "out").exists()


def test_build_sign_without_network_exits_3_pushes_nothing_and_hides_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _token()
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", token)
    code, err = _build(tmp_path, capsys)
    assert code == 3
    assert "Sigstore" in err
    assert token not in err
    assert not (tmp_path / "out").exists()

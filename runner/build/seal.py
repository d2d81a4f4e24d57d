"""Sealing a Secret with Bitnami's own `kubeseal`, offline, for a controller's certificate.

The Secret goes to kubeseal on stdin and the SealedSecret comes back on stdout: values never
touch the disk or a command line. kubeseal encrypts each value with a fresh session key, so the
same Secret sealed twice gives different ciphertext (and a different digest).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

from runner.common.errors import InputError
from runner.common.objects import Obj

SEAL_TIMEOUT = 60


def kubeseal_path() -> str:
    """$LADING_KUBESEAL, then PATH (`lading dev env` and the test suite point LADING_KUBESEAL
    at the pinned build scripts/provision-tools makes)."""
    found = os.environ.get("LADING_KUBESEAL") or shutil.which("kubeseal")
    if not found:
        raise InputError(
            "the `kubeseal` binary was not found (it seals the App's SealedSecret)",
            hint="install it on PATH or set LADING_KUBESEAL (scripts/provision-tools builds "
            "it; `lading dev env` exports the path)",
        )
    return found


@functools.cache
def kubeseal_version(binary: str) -> str:
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    # `kubeseal version: v0.40.0`
    return (proc.stdout or proc.stderr).strip().rsplit(" ", 1)[-1] or "unknown"


def seal(secret: Obj, certificate: Path, scope: str, display: str) -> Obj:
    """`secret` sealed for the controller holding `certificate`'s key, with `scope`'s binding
    (strict: name and namespace; namespace-wide; cluster-wide)."""
    binary = kubeseal_path()
    cmd = [binary, "--cert", str(certificate), "--scope", scope, "--format", "json"]
    # kubeseal reads a kubeconfig for a default namespace even when told the certificate; an
    # empty one keeps the build machine's cluster out of it.
    env = {**os.environ, "KUBECONFIG": os.devnull}
    try:
        proc = subprocess.run(cmd, input=json.dumps(secret), capture_output=True, text=True,
                              timeout=SEAL_TIMEOUT, env=env)
    except OSError as e:
        raise InputError(f"cannot run kubeseal ({binary}): {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise InputError(f"kubeseal did not finish within {SEAL_TIMEOUT}s") from None
    if proc.returncode != 0:
        # kubeseal's errors are about the certificate or the flags, never the values.
        detail = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise InputError(f"{display}: kubeseal could not seal the secret: {detail[0]}")
    try:
        sealed: Obj = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise InputError(f"{display}: kubeseal printed something other than JSON") from None
    return _without_nulls(sealed)


def _without_nulls(value: object) -> Obj:
    # kubeseal prints `creationTimestamp: null` (Go's zero time) in metadata and the template.
    def clean(v: object) -> object:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    cleaned = clean(value)
    assert isinstance(cleaned, dict)
    return cleaned

"""Kubeconfig variants of the test cluster's admin kubeconfig, for tests of how lading reads
them (server behind a proxy, files split, credentials as files or tokens)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def load(kubeconfig: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
    return doc


def save(doc: dict[str, Any], out: Path) -> Path:
    out.write_text(yaml.safe_dump(doc))
    out.chmod(0o600)
    return out


def rewrite_server(kubeconfig: Path, server: str, out: Path) -> Path:
    """The same kubeconfig, talking to `server` (a proxy in front of the API server)."""
    doc = load(kubeconfig)
    for cluster in doc["clusters"]:
        cluster["cluster"]["server"] = server
    return save(doc, out)


def ca_pem(kubeconfig: Path) -> bytes:
    return base64.b64decode(load(kubeconfig)["clusters"][0]["cluster"]
                            ["certificate-authority-data"])


def token_user(kubeconfig: Path, user: dict[str, Any], out: Path,
               namespace: str | None = None) -> Path:
    """The test cluster with `user` (a token, tokenFile, exec…) instead of the admin cert."""
    doc = load(kubeconfig)
    doc["users"] = [{"name": "other", "user": user}]
    for context in doc["contexts"]:
        context["context"]["user"] = "other"
        if namespace:
            context["context"]["namespace"] = namespace
    return save(doc, out)

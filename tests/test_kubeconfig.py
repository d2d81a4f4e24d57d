"""runner.common.kubeconfig against the real kube-apiserver: every way a kubeconfig names the
cluster and the user (merged KUBECONFIG files, files relative to the kubeconfig, inline data,
tokens, token files, exec plugins, an HTTP proxy) reaches it as the user it names — checked
by asking the server who we are (SelfSubjectReview) — and every broken one is a clear
InputError or RemoteError naming no credential."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.common.errors import InputError, RemoteError
from runner.common.kube import KubeClient, Resource, Target
from runner.dev.endpoints import ClusterEndpoint
from tests.kubeconfigs import ca_pem, load, save, token_user

pytestmark = pytest.mark.cluster

SERVICE_ACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts", True)


def whoami(client: KubeClient) -> str:
    review = client.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                            body={"apiVersion": "authentication.k8s.io/v1",
                                  "kind": "SelfSubjectReview"})
    return str(review["status"]["userInfo"]["username"])


def connect(**target: Any) -> KubeClient:
    return KubeClient(Target(**target))


@pytest.fixture
def token(kube: KubeClient, ns: str) -> str:
    kube.apply(SERVICE_ACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                  "metadata": {"name": "reader", "namespace": ns}},
               field_manager="test-setup")
    answer = kube.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/reader/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": 600}})
    return str(answer["status"]["token"])


def test_the_admin_kubeconfig_and_its_current_context(control_plane: ClusterEndpoint) -> None:
    client = connect(kubeconfig=str(control_plane.kubeconfig))
    try:
        assert whoami(client)  # the dev admin certificate's user
        assert client.default_namespace == "default"
    finally:
        client.close()


def test_inline_client_certificates_load_without_a_temporary_directory(
    control_plane: ClusterEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A runner with a read-only root and no /tmp still authenticates with the key inline in
    # its kubeconfig, and a process that ends while its client is being built on another
    # thread leaves no key (nor a temporary name) behind: the key is never written to disk.
    assert "client-key-data" in control_plane.kubeconfig.read_text()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "absent"))
    client = connect(kubeconfig=str(control_plane.kubeconfig))
    try:
        assert whoami(client)
    finally:
        client.close()
    assert not (tmp_path / "absent").exists()


def test_kubeconfig_files_merge_as_kubectl_merges_them(
    control_plane: ClusterEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = load(control_plane.kubeconfig)
    # The first file names the context (and a namespace); the second holds cluster and user.
    # A namesake cluster in the second file loses to the first file's.
    first = {"apiVersion": "v1", "kind": "Config", "current-context": "split",
             "contexts": [{"name": "split", "context": {
                 "cluster": "c", "user": "u", "namespace": "team-a"}}],
             "clusters": [{"name": "c", "cluster": doc["clusters"][0]["cluster"]}]}
    second = {"apiVersion": "v1", "kind": "Config", "current-context": "ignored",
              "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
              "users": [{"name": "u", "user": doc["users"][0]["user"]}]}
    paths = [save(first, tmp_path / "one"), save(second, tmp_path / "two")]
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(str(p) for p in paths))
    client = connect()
    try:
        assert whoami(client)
        assert client.default_namespace == "team-a"
    finally:
        client.close()


def test_certificate_files_are_found_next_to_the_kubeconfig(
    control_plane: ClusterEndpoint, tmp_path: Path
) -> None:
    doc = load(control_plane.kubeconfig)
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    certs = tmp_path / "certs"
    certs.mkdir()
    for key, name in (("certificate-authority-data", "ca.crt"),):
        (certs / name).write_bytes(base64.b64decode(cluster.pop(key)))
    (certs / "admin.crt").write_bytes(base64.b64decode(user.pop("client-certificate-data")))
    (certs / "admin.key").write_bytes(base64.b64decode(user.pop("client-key-data")))
    cluster["certificate-authority"] = "certs/ca.crt"
    user["client-certificate"] = "certs/admin.crt"
    user["client-key"] = "certs/admin.key"
    config = save(doc, tmp_path / "kubeconfig")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = Path.cwd()
    os.chdir(elsewhere)  # relative to the kubeconfig, not to where lading runs
    try:
        client = connect(kubeconfig=str(config))
        assert whoami(client)
        client.close()
    finally:
        os.chdir(cwd)
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("lading-tls-*"))


def test_a_token_a_token_file_and_an_exec_plugin_each_authenticate(
    control_plane: ClusterEndpoint, tmp_path: Path, token: str, ns: str
) -> None:
    expected = f"system:serviceaccount:{ns}:reader"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    plugin = tmp_path / "plugin.sh"
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token}}
    plugin.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    plugin.chmod(0o700)
    users = {
        "token": {"token": token},
        "tokenFile": {"tokenFile": str(token_file)},
        "exec": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                          "command": str(plugin), "interactiveMode": "Never"}},
    }
    for name, user in users.items():
        config = token_user(control_plane.kubeconfig, user, tmp_path / f"kc-{name}", ns)
        client = connect(kubeconfig=str(config))
        try:
            assert whoami(client) == expected, name
            assert client.default_namespace == ns
        finally:
            client.close()


def test_server_and_token_without_a_kubeconfig(
    control_plane: ClusterEndpoint, tmp_path: Path, token: str, ns: str
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(ca_pem(control_plane.kubeconfig))
    client = connect(server=control_plane.server, ca_file=str(ca), token=token)
    try:
        assert whoami(client) == f"system:serviceaccount:{ns}:reader"
    finally:
        client.close()


@pytest.fixture
def connect_proxy() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP CONNECT proxy on loopback (what a corporate proxy does for HTTPS): it opens a
    tunnel to the host the client names and copies bytes both ways. Records request heads."""
    listener = socket.create_server(("127.0.0.1", 0))
    heads: list[bytes] = []

    def pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                s.close()

    def serve(client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        heads.append(head)
        host, port = head.split()[1].decode().rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://user:pa%40ss@127.0.0.1:{listener.getsockname()[1]}", heads
    listener.close()


def test_a_proxy_url_tunnels_through_the_proxy(
    control_plane: ClusterEndpoint, tmp_path: Path, connect_proxy: tuple[str, list[bytes]]
) -> None:
    url, heads = connect_proxy
    doc = load(control_plane.kubeconfig)
    doc["clusters"][0]["cluster"]["proxy-url"] = url
    client = connect(kubeconfig=str(save(doc, tmp_path / "kubeconfig")))
    try:
        assert whoami(client)
    finally:
        client.close()
    assert heads
    assert heads[0].startswith(b"CONNECT 127.0.0.1:")
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"user:pa@ss") in heads[0]

    doc["clusters"][0]["cluster"]["proxy-url"] = "socks5://127.0.0.1:1080"
    with pytest.raises(InputError, match="http:// proxies only"):
        connect(kubeconfig=str(save(doc, tmp_path / "socks")))


def test_broken_kubeconfigs_are_input_errors_naming_what_is_wrong(
    control_plane: ClusterEndpoint, tmp_path: Path
) -> None:
    doc = load(control_plane.kubeconfig)
    context = doc["current-context"]
    with pytest.raises(InputError, match=f"no context 'nope'.*{context}"):
        connect(kubeconfig=str(control_plane.kubeconfig), context="nope")
    with pytest.raises(InputError, match="does not exist"):
        connect(kubeconfig=str(tmp_path / "missing"))
    broken = load(control_plane.kubeconfig)
    broken["users"][0]["user"]["client-key-data"] = base64.b64encode(b"not a key").decode()
    with pytest.raises(InputError, match="client certificate and key do not load"):
        connect(kubeconfig=str(save(broken, tmp_path / "badkey")))
    broken = load(control_plane.kubeconfig)
    broken["contexts"][0]["context"]["cluster"] = "ghost"
    with pytest.raises(InputError, match="names cluster 'ghost'"):
        connect(kubeconfig=str(save(broken, tmp_path / "ghost")))


def test_a_server_certificate_the_ca_did_not_sign_is_refused(
    control_plane: ClusterEndpoint, tmp_path: Path
) -> None:
    from runner.dev.pki import new_ca  # a CA of its own, not the cluster's

    doc = load(control_plane.kubeconfig)
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        new_ca("not the cluster's CA").cert_pem).decode()
    client = connect(kubeconfig=str(save(doc, tmp_path / "kubeconfig")))
    try:
        with pytest.raises(RemoteError, match="TLS handshake with the API server"):
            whoami(client)
    finally:
        client.close()

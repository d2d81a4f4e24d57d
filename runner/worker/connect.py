"""Connecting to Temporal the way `lading worker` and `lading submit` both do: address,
namespace, TLS and API key named and defaulted as Temporal's own CLI names them, and the
payload codec both sides share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import temporalio.converter
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.service import RPCError, TLSConfig

from runner.common.errors import InputError, RemoteError
from runner.worker.codec import EncryptionCodec, Keyring

DEFAULT_ADDRESS = "127.0.0.1:7233"


@dataclass(frozen=True)
class Connection:
    address: str = DEFAULT_ADDRESS
    namespace: str = "default"
    api_key: SecretStr | None = None
    tls: bool = False
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    tls_ca_path: Path | None = None
    tls_server_name: str | None = None
    keyring: Keyring | None = None
    identity: str | None = None

    def tls_config(self) -> TLSConfig | bool:
        files = (self.tls_cert_path, self.tls_key_path, self.tls_ca_path)
        if not self.tls and not any(files) and not self.tls_server_name:
            # An API key implies TLS, as in Temporal's CLI: keys are for hosted namespaces.
            return self.api_key is not None
        if (self.tls_cert_path is None) != (self.tls_key_path is None):
            raise InputError("--tls-cert-path and --tls-key-path go together")
        return TLSConfig(
            server_root_ca_cert=_read(self.tls_ca_path),
            domain=self.tls_server_name,
            client_cert=_read(self.tls_cert_path),
            client_private_key=_read(self.tls_key_path),
        )


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None


def data_converter(keyring: Keyring | None) -> temporalio.converter.DataConverter:
    converter = temporalio.converter.default()
    if keyring is None:
        return converter
    return dataclasses.replace(converter, payload_codec=EncryptionCodec(keyring))


async def connect(connection: Connection) -> Client:
    """A client for `connection`; an unreachable server or a refused key is a RemoteError."""
    try:
        return await Client.connect(
            connection.address,
            namespace=connection.namespace,
            api_key=connection.api_key.get_secret_value() if connection.api_key else None,
            tls=connection.tls_config(),
            data_converter=data_converter(connection.keyring),
            identity=connection.identity,
        )
    except RPCError as e:
        raise RemoteError(
            f"cannot reach Temporal at {connection.address} (namespace "
            f"{connection.namespace}): {e.message}",
            hint="start one with `lading dev up --temporal`, or set --address/$TEMPORAL_ADDRESS",
        ) from None
    except RuntimeError as e:  # the SDK's connection failures arrive as RuntimeError
        raise RemoteError(
            f"cannot reach Temporal at {connection.address}: {str(e).splitlines()[0][:300]}",
            hint="start one with `lading dev up --temporal`, or set --address/$TEMPORAL_ADDRESS",
        ) from None

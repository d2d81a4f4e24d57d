"""An AES-GCM payload codec, so what must travel through Temporal is ciphertext in its history.

Temporal stores every workflow input, activity input and result, heartbeat detail and failure
detail in the workflow history, readable by anyone who can read the namespace. Plans name
credentials by reference (a kubeconfig context, a mounted file, an environment variable the
worker reads), and this codec covers the rest: each payload becomes
`{encoding: binary/encrypted, encryption-key-id: ID}` with `nonce ‖ AES-256-GCM(payload)` as
data, the key id bound as associated data. The key id travels with the payload, so keys rotate:
the keyring's first key encrypts, every key decrypts.

A keyring is text, one `ID:BASE64KEY` per line (or separated by commas), from a file
(`--codec-key-file`, `$LADING_CODEC_KEY_FILE`) or from `$LADING_CODEC_KEY`. `lading worker` and
`lading submit` read the same one; a Go or TypeScript control plane implements the same few
lines (see the README's "Control planes").
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from runner.common.errors import InputError

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32
ENV_KEY = "LADING_CODEC_KEY"
ENV_KEY_FILE = "LADING_CODEC_KEY_FILE"
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class Keyring:
    """Named AES-256 keys; `keys[0]` encrypts."""

    keys: tuple[tuple[str, bytes], ...]

    @property
    def current(self) -> tuple[str, bytes]:
        return self.keys[0]

    def key(self, key_id: str) -> bytes | None:
        return dict(self.keys).get(key_id)


def parse_keyring(text: str, where: str) -> Keyring:
    """`ID:BASE64KEY` entries, one per line or comma-separated. Errors name the entry, never
    the key."""
    keys: list[tuple[str, bytes]] = []
    for number, entry in enumerate(re.split(r"[,\n]", text), start=1):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise InputError(
                f"{where}: entry {number} is not ID:BASE64KEY",
                hint="a key id is 1-64 letters, digits, '.', '_' or '-'; generate a key with "
                "`openssl rand -base64 32`",
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{where}: key {key_id!r} is not base64") from None
        if len(key) != KEY_BYTES:
            raise InputError(
                f"{where}: key {key_id!r} has {len(key)} bytes; AES-256 needs {KEY_BYTES}"
            )
        if any(existing == key_id for existing, _ in keys):
            raise InputError(f"{where}: key id {key_id!r} appears twice")
        keys.append((key_id, key))
    if not keys:
        raise InputError(f"{where}: no keys")
    return Keyring(tuple(keys))


def load_keyring(
    key_file: Path | None, environ: dict[str, str] | None = None
) -> Keyring | None:
    """The keyring from `key_file`, else `$LADING_CODEC_KEY_FILE`, else `$LADING_CODEC_KEY`;
    None when none is configured (payloads then travel as plain JSON)."""
    env = os.environ if environ is None else environ
    path = key_file or (Path(env[ENV_KEY_FILE]) if env.get(ENV_KEY_FILE) else None)
    if path is not None:
        try:
            text = path.read_text()
        except OSError as e:
            raise InputError(f"cannot read codec key file {path}: {e.strerror}") from None
        return parse_keyring(text, str(path))
    if env.get(ENV_KEY):
        return parse_keyring(env[ENV_KEY], f"${ENV_KEY}")
    return None


def new_key_entry(key_id: str) -> str:
    """A fresh `ID:BASE64KEY` keyring entry."""
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


class EncryptionCodec(PayloadCodec):
    """Encrypts every payload with the keyring's current key; decrypts with the key its
    metadata names. Payloads that are not encrypted pass through on decode, so a worker with a
    keyring still reads history written before the keyring existed."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        key_id, key = self.keyring.current
        cipher = AESGCM(key)
        encoded = []
        for payload in payloads:
            nonce = secrets.token_bytes(NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), key_id.encode())
            encoded.append(Payload(
                metadata={"encoding": ENCODING, KEY_ID: key_id.encode()},
                data=nonce + sealed,
            ))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
            key = self.keyring.key(key_id)
            if key is None:
                raise InputError(
                    f"payload encrypted with codec key {key_id!r}, which this keyring lacks",
                    hint="add that key to the keyring (keep old keys while history uses them)",
                )
            nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
            try:
                plain = AESGCM(key).decrypt(nonce, sealed, key_id.encode())
            except InvalidTag:
                raise InputError(
                    f"payload under codec key {key_id!r} does not decrypt: tampered, or "
                    "another key under the same id"
                ) from None
            decoded.append(Payload.FromString(plain))
        return decoded

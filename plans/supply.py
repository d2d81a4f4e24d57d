"""Supply-chain contract: the signature policy an install enforces, and the results of
`sign`, `verify`, `export` and `import`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from plans.common import API_VERSION, Result, Strict


class SignaturePolicy(Strict):
    """Who must have signed the artifact: a Sigstore certificate identity and OIDC issuer,
    each exact or a regular expression (matched in full), checked offline against a
    trusted root."""

    identity: str | None = Field(
        default=None, description="certificate identity (SAN), e.g. an email or workflow URI"
    )
    identity_regexp: str | None = Field(default=None, description="regexp the SAN must match")
    issuer: str | None = Field(
        default=None, description="OIDC issuer, e.g. https://token.actions.githubusercontent.com"
    )
    issuer_regexp: str | None = Field(default=None, description="regexp the issuer must match")
    trusted_root: str | None = Field(
        default=None,
        description="trusted_root.json (or a client trust config) of a private Sigstore "
        "instance; default: the public-good root embedded in sigstore-python",
    )

    @field_validator("identity_regexp", "issuer_regexp")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"invalid regular expression {value!r}: {e}") from None
        return value

    @model_validator(mode="after")
    def _one_of_each(self) -> SignaturePolicy:
        if (self.identity is None) == (self.identity_regexp is None):
            raise ValueError("give exactly one of identity and identity_regexp")
        if (self.issuer is None) == (self.issuer_regexp is None):
            raise ValueError("give exactly one of issuer and issuer_regexp")
        return self


class Signature(Result):
    referrer: str = Field(description="digest of the referrer manifest holding the bundle")
    identity: str
    issuer: str
    log_index: int | None = None
    integrated_time: int | None = None


class SignResult(Result):
    apiVersion: str = API_VERSION
    kind: Literal["SignResult"] = "SignResult"
    digest: str
    ref: str
    signature: Signature
    attached: Literal["referrers-api", "tag-fallback", "layout"]


class VerifyResult(Result):
    apiVersion: str = API_VERSION
    kind: Literal["VerifyResult"] = "VerifyResult"
    digest: str
    ref: str
    verified: bool
    signature: Signature


class TransferResult(Result):
    """`export` and `import`: what was copied, with the same digests at both ends."""

    apiVersion: str = API_VERSION
    kind: Literal["ExportResult", "ImportResult"]
    digest: str
    ref: str
    tags: list[str] = Field(default_factory=list)
    size: int = Field(description="bytes of the artifact: manifest, config and layers")
    objects: int | None = None
    source: dict[str, Any] | None = None
    referrers: list[str] = Field(default_factory=list, description="referrer manifest digests")
    blobs_copied: int = 0
    blobs_skipped: int = 0
    seconds: float = 0.0

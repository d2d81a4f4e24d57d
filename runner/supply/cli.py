"""`lading sign | verify | export | import`: flags → one function → result; and the signature
policy flags `lading install --verify` shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from plans.common import validate_document
from plans.supply import SignaturePolicy, SignResult, TransferResult, VerifyResult
from runner.common.cliopts import fmt, given, output_options, progress_for, registry_flags
from runner.common.output import emit
from runner.common.store import RegistryOptions

# flag → SignaturePolicy field
POLICY_FLAGS = {
    "certificate_identity": "identity",
    "certificate_identity_regexp": "identity_regexp",
    "certificate_oidc_issuer": "issuer",
    "certificate_oidc_issuer_regexp": "issuer_regexp",
    "trusted_root": "trusted_root",
}


def policy_options(fn: Any) -> Any:
    options = [
        click.option("--certificate-identity", metavar="SAN",
                     help="Signer identity the certificate must hold (email or URI)."),
        click.option("--certificate-identity-regexp", metavar="RE",
                     help="Regexp the signer identity must match in full."),
        click.option("--certificate-oidc-issuer", metavar="URL",
                     help="OIDC issuer of the signer identity."),
        click.option("--certificate-oidc-issuer-regexp", metavar="RE",
                     help="Regexp the OIDC issuer must match in full."),
        click.option("--trusted-root", type=click.Path(exists=True, dir_okay=False),
                     help="trusted_root.json of a private Sigstore instance (default: the "
                     "public-good root shipped with sigstore-python; no network either way)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def policy_document(ctx: click.Context) -> dict[str, Any]:
    return {
        field: ctx.params[flag]
        for flag, field in POLICY_FLAGS.items()
        if ctx.params.get(flag) is not None
    }


def install_verify_options(fn: Any) -> Any:
    fn = policy_options(fn)
    return click.option("--verify", "verify_signature", is_flag=True,
                        help="Refuse the artifact unless a Sigstore signature by the "
                        "--certificate-* identity verifies offline.")(fn)


def apply_install_verify(ctx: click.Context, document: dict[str, Any]) -> None:
    """`--verify` and the policy flags → the plan's `verify` field (flags win over the plan)."""
    flags = policy_document(ctx)
    if flags and not ctx.params.get("verify_signature"):
        raise click.UsageError("--certificate-*/--trusted-root need --verify")
    if ctx.params.get("verify_signature") and given(ctx, "verify_signature"):
        document["verify"] = {**(document.get("verify") or {}), **flags}


def _options(plain_http: bool, ca_file: str | None) -> RegistryOptions:
    return RegistryOptions.of(plain_http, ca_file)


def _render_sign(result: SignResult) -> str:
    s = result.signature
    return (f"signed {result.ref}\n  by {s.identity} ({s.issuer}), Rekor log index "
            f"{s.log_index}\n  signature {s.referrer} ({result.attached})")


def _render_verify(result: VerifyResult) -> str:
    s = result.signature
    return (f"verified {result.ref}\n  signed by {s.identity} ({s.issuer}), Rekor log index "
            f"{s.log_index}\n  signature {s.referrer}")


def _render_transfer(result: TransferResult) -> str:
    verb = "exported" if result.kind == "ExportResult" else "imported"
    lines = [f"{verb} {result.ref}",
             f"  {result.size} bytes, {len(result.referrers)} referrer(s); "
             f"{result.blobs_copied} blob(s) copied, {result.blobs_skipped} already there, "
             f"in {result.seconds:.2f}s"]
    lines += [f"  referrer {d}" for d in result.referrers]
    return "\n".join(lines)


@click.command("sign")
@click.argument("ref")
@click.option("--identity-token", envvar="SIGSTORE_ID_TOKEN", metavar="JWT",
              help="OIDC identity token (default: the CI system's ambient credential). "
              "Prefer the SIGSTORE_ID_TOKEN variable: arguments show in process lists.")
@click.option("--trust-config", type=click.Path(exists=True, dir_okay=False),
              help="Client trust config (trusted root + signing config) of a private "
              "Sigstore instance (default: public-good, refreshed over TUF).")
@registry_flags
@output_options
def sign_cmd(ref: str, identity_token: str | None, trust_config: str | None, plain_http: bool,
             ca_file: str | None, output: str, quiet: bool, verbose: bool) -> None:
    """Sign an artifact keylessly with Sigstore and attach the bundle as a referrer.

    \b
    Examples:
      lading sign localhost:5000/shop/app@sha256:…          # in CI, ambient OIDC
      SIGSTORE_ID_TOKEN=… lading sign oci-layout:./carry@sha256:…
    """
    from runner.supply.sign import sign

    result = sign(ref, token=SecretStr(identity_token) if identity_token else None,
                  trust_config_path=Path(trust_config) if trust_config else None,
                  options=_options(plain_http, ca_file),
                  progress=progress_for(quiet, verbose))
    emit(result, fmt(output), _render_sign)


@click.command("verify")
@click.argument("ref")
@policy_options
@registry_flags
@output_options
@click.pass_context
def verify_cmd(ctx: click.Context, /, ref: str, plain_http: bool, ca_file: str | None,
               output: str, quiet: bool, verbose: bool, **_: Any) -> None:
    """Verify an artifact's Sigstore signature offline. Exit 0 verified, 1 refused.

    \b
    Example:
      lading verify localhost:5000/shop/app@sha256:… \\
        --certificate-identity-regexp "https://github.com/acme/shop/.*" \\
        --certificate-oidc-issuer https://token.actions.githubusercontent.com
    """
    from runner.supply.verify import verify

    policy = validate_document(SignaturePolicy, policy_document(ctx), "signature policy")
    result = verify(ref, policy, _options(plain_http, ca_file), progress_for(quiet, verbose))
    emit(result, fmt(output), _render_verify)


@click.command("export")
@click.argument("ref")
@click.option("-O", "--out", "out", required=True, metavar="OUT(.tar|DIR)",
              help="OCI layout to write: a directory, or a .tar file.")
@registry_flags
@output_options
def export_cmd(ref: str, out: str, plain_http: bool, ca_file: str | None, output: str,
               quiet: bool, verbose: bool) -> None:
    """Export an artifact with its signatures into an OCI layout for carrying.

    \b
    Example:
      lading export localhost:5000/shop/app@sha256:… --out carry.tar
    """
    from runner.supply.export import export

    result = export(ref, out, _options(plain_http, ca_file), progress_for(quiet, verbose))
    emit(result, fmt(output), _render_transfer)


@click.command("import")
@click.argument("source", metavar="IN(.tar|DIR)")
@click.option("--to", required=True, metavar="REGISTRY/REPO[:TAG]",
              help="Repository to copy into; digests stay the same.")
@registry_flags
@output_options
def import_cmd(source: str, to: str, plain_http: bool, ca_file: str | None, output: str,
               quiet: bool, verbose: bool) -> None:
    """Import an exported layout into a registry; resumable, referrers kept.

    \b
    Example:
      lading import carry.tar --to registry.internal/shop/app
    """
    from runner.supply.imports import import_layout

    result = import_layout(source, to, _options(plain_http, ca_file),
                           progress_for(quiet, verbose))
    emit(result, fmt(output), _render_transfer)


COMMANDS = (sign_cmd, verify_cmd, export_cmd, import_cmd)

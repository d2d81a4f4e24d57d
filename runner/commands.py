"""The `lading` command group: each verb's command is imported only when it runs.

`lading --version`, `lading --help` and shell completion import none of the verb modules
(kubernetes, oras, pydantic models), so they answer in a fraction of the time a verb takes to
import. COMMANDS keeps each command's short help for `--help`; a test checks it against the
commands themselves.
"""

from __future__ import annotations

import importlib

import click

from runner import __version__

# name → (module, attribute, short help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "build": ("runner.build.cli", "build_cmd",
              "Build a reproducible artifact from manifests and push it."),
    "completion": ("runner.completion", "completion_cmd",
                   "Print the completion script for bash, zsh or fish."),
    "dev": ("runner.dev.cli", "dev",
            "A local control plane and OCI registry for trying lading and for its tests."),
    "diff": ("runner.install.cli", "diff_cmd",
             "Compare the live cluster with an artifact, or without REF with what the..."),
    "export": ("runner.supply.cli", "export_cmd",
               "Export an artifact with its signatures into an OCI layout for carrying."),
    "import": ("runner.supply.cli", "import_cmd",
               "Import an exported layout into a registry; resumable, referrers kept."),
    "inspect": ("runner.build.cli", "inspect_cmd",
                "Show an artifact's metadata, objects and referrers (signatures), verified by..."),
    "install": ("runner.install.cli", "install_cmd",
                "Install an artifact by digest with server-side apply."),
    "rollback": ("runner.install.cli", "rollback_cmd",
                 "Reinstall the digest the inventory held before the current one, under the..."),
    "run": ("runner.run", "run_cmd",
            "Run a job plan: dispatch on its kind, print the result document."),
    "schema": ("runner.schema", "schema_cmd",
               "Print the JSON Schema of a plan (build, install) or a result document."),
    "sign": ("runner.supply.cli", "sign_cmd",
             "Sign an artifact keylessly with Sigstore and attach the bundle as a referrer."),
    "submit": ("runner.worker.cli", "submit_cmd",
               "Start a plan on Temporal: a ShipPlan as the `ship` workflow, any other plan..."),
    "uninstall": ("runner.install.cli", "uninstall_cmd",
                  "Delete everything an inventory installed, then the inventory."),
    "unlock": ("runner.install.cli", "unlock_cmd",
               "Break an inventory lock deliberately: delete its Lease, saying who held it."),
    "verify": ("runner.supply.cli", "verify_cmd",
               "Verify an artifact's Sigstore signature offline."),
    "worker": ("runner.worker.cli", "worker_cmd",
               "Run lading's activities and workflows for a Temporal task queue."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported only when one of them runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attribute, _ = entry
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, _, help_text) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lading")
def cli() -> None:
    """Ship Kubernetes configuration as OCI artifacts.

    \b
    Build an artifact from manifests and push it:
      lading build --kustomize examples/overlays/dev --to localhost:5000/shop/app:dev
    Install it into a cluster by digest:
      lading install localhost:5000/shop/app@sha256:... -n shop
    """

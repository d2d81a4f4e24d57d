"""The `lading` command line: a thin shell that parses flags into values, calls one function
per verb and renders its result. Errors map to exit codes in one place: `main`."""

from __future__ import annotations

import os
import sys
import traceback

import click

from runner import __version__
from runner.common.cliopts import current_log_format
from runner.common.errors import LadingError, exit_code
from runner.common.output import report_error


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lading")
def cli() -> None:
    """Ship Kubernetes configuration as OCI artifacts.

    \b
    Build an artifact from manifests and push it:
      lading build --kustomize examples/overlays/dev --to localhost:5000/shop/app:dev
    Install it into a cluster by digest:
      lading install localhost:5000/shop/app@sha256:... -n shop
    """


def _register() -> None:
    # Verb modules import heavy libraries (kubernetes, oras); importing them here rather than at
    # module top keeps `lading --help` fast and avoids import cycles with the verb modules.
    from runner.build.cli import COMMANDS as BUILD_COMMANDS
    from runner.completion import completion_cmd
    from runner.dev.cli import dev
    from runner.install.cli import COMMANDS as INSTALL_COMMANDS
    from runner.run import run_cmd
    from runner.schema import schema_cmd
    from runner.supply.cli import COMMANDS as SUPPLY_COMMANDS

    cli.add_command(dev)
    for extra in (run_cmd, schema_cmd, completion_cmd):
        cli.add_command(extra)
    for command in (*BUILD_COMMANDS, *INSTALL_COMMANDS, *SUPPLY_COMMANDS):
        cli.add_command(command)


BUG_HINT = (
    "this is a bug in lading, not in your input: please report it with the command you ran "
    "and the traceback (`-v` or LADING_DEBUG=1 prints it)"
)


def main(argv: list[str] | None = None) -> None:
    _register()
    args = sys.argv[1:] if argv is None else argv
    try:
        # standalone_mode=False returns ctx.exit()'s code instead of exiting, e.g. diff's 1.
        rv = cli.main(args=args, prog_name="lading", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:  # usage errors: bad flags, missing arguments
        e.show()
        sys.exit(2)
    except LadingError as e:
        report_error(str(e), current_log_format(), exit_code(e))
        sys.exit(exit_code(e))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # anything unforeseen: one line and a hint, never a bare traceback
        if _debugging(args):
            traceback.print_exc()
        what = str(e).splitlines()[0][:300] if str(e) else ""
        message = f"internal error: {type(e).__name__}{': ' + what if what else ''}"
        report_error(f"{message}\n  hint: {BUG_HINT}", current_log_format(), 1)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


def _debugging(args: list[str]) -> bool:
    flags = args[: args.index("--")] if "--" in args else args
    return os.environ.get("LADING_DEBUG", "") not in ("", "0") or any(
        a in ("-v", "--verbose") for a in flags
    )


if __name__ == "__main__":
    main()

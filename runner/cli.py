"""The `lading` command line: a thin shell that parses flags into values, calls one function
per verb and renders its result. Errors map to exit codes in one place: `main`.

This module imports nothing but the standard library until `main` knows the verb: for
`lading build --kustomize DIR`, kustomize starts (runner.build.early) before click, YAML or
pydantic load, and those imports run while it does. The command group is runner.commands.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

BUG_HINT = (
    "this is a bug in lading, not in your input: please report it with the command you ran "
    "and the traceback (`-v` or LADING_DEBUG=1 prints it)"
)


def main(argv: list[str] | None = None) -> None:
    # The interpreter's exit ends with a collection that walks every object the verb's
    # imports made (pydantic's, the registry client's): 35 ms after a build. Frozen first,
    # they are left to the end of the process; atexit, flushing and module teardown run as
    # at any exit, so output is written and temporary files are removed.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["build"]:
        _main(args)
        return
    # kustomize starts now and runs while the build's modules import.
    from runner.build.early import kustomize_started_early

    try:
        with kustomize_started_early(args[1:]):
            _main(args)
    except SystemExit as done:
        if argv is None:  # the process is lading, not a caller of main
            _exit_now(done)
        raise


def _exit_now(done: SystemExit) -> None:
    """End the process without the interpreter's module-by-module teardown (15 ms after a
    build) once nothing in it is still needed: every atexit handler has run (temporary
    directories, scratch layouts, logging), the output is flushed, and no other thread runs.
    Returns, for the ordinary exit, when any of that does not hold."""
    import threading

    code = done.code
    if not (code is None or isinstance(code, int)) or threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: the ordinary exit reports it
        return
    os._exit(code or 0)


def _main(args: list[str]) -> None:
    import click

    from runner.commands import cli

    try:
        # standalone_mode=False returns ctx.exit()'s code instead of exiting, e.g. diff's 1.
        rv = cli.main(args=args, prog_name="lading", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:  # usage errors: bad flags, missing arguments
        e.show()
        sys.exit(2)
    except Exception as e:
        _report(e, args)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


def _report(error: Exception, args: list[str]) -> None:
    """Every error that reaches the top: lading's own with its exit code, anything unforeseen
    as one line and a hint, never a bare traceback."""
    from runner.common.cliopts import current_log_format
    from runner.common.errors import LadingError, exit_code
    from runner.common.output import report_error

    if isinstance(error, LadingError):
        report_error(str(error), current_log_format(), exit_code(error))
        sys.exit(exit_code(error))
    if _debugging(args):
        import traceback

        traceback.print_exception(error)
    what = str(error).splitlines()[0][:300] if str(error) else ""
    message = f"internal error: {type(error).__name__}{': ' + what if what else ''}"
    report_error(f"{message}\n  hint: {BUG_HINT}", current_log_format(), 1)
    sys.exit(1)


def _debugging(args: list[str]) -> bool:
    flags = args[: args.index("--")] if "--" in args else args
    return os.environ.get("LADING_DEBUG", "") not in ("", "0") or any(
        a in ("-v", "--verbose") for a in flags
    )


if __name__ == "__main__":
    main()

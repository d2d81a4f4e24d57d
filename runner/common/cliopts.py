"""Flags every lading command shares, as click decorators, and turning flags into plan
fields: a flag given on the command line overrides the plan file; one left at its default
does not."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from runner.common.output import LOG_FORMATS, LogFormat, OutputFormat, Progress

F = TypeVar("F", bound=Callable[..., Any])

LOG_FORMAT_KEY = "lading.log_format"
# The last --log-format parsed in this process, for reporting an error after the click context
# is gone (runner.cli.main).
_parsed: dict[str, str] = {}


def _remember_log_format(ctx: click.Context, param: click.Parameter, value: str) -> str:
    del param
    ctx.meta[LOG_FORMAT_KEY] = value
    _parsed[LOG_FORMAT_KEY] = value
    return value


def log_format_option(fn: F) -> F:
    """`--log-format text|json` (or $LADING_LOG_FORMAT). Not passed to the command function:
    `progress_for` and the error reporter read it from the click context, so adding it to a
    command never changes the command's signature."""
    return click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text",
                        envvar="LADING_LOG_FORMAT", show_default=True, expose_value=False,
                        callback=_remember_log_format, is_eager=True,
                        help="Progress on stderr: text (a live line in a terminal, else one "
                             "line per event) or json (one JSON object per line).")(fn)


def current_log_format() -> LogFormat:
    """The --log-format of the running command, from any nested context; text outside one."""
    ctx = click.get_current_context(silent=True)
    value = ctx.meta.get(LOG_FORMAT_KEY) if ctx is not None else _parsed.get(LOG_FORMAT_KEY)
    if value is None:
        value = os.environ.get("LADING_LOG_FORMAT", "text")
    return "json" if value == "json" else "text"


def output_options(fn: F) -> F:
    fn = log_format_option(fn)
    fn = click.option("-o", "--output", "output", type=click.Choice(["text", "json", "yaml"]),
                      default="text", show_default=True,
                      help="Result format; json/yaml print only the result document on stdout.")(fn)
    fn = click.option("-v", "--verbose", is_flag=True, help="More progress detail on stderr.")(fn)
    return click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")(fn)


def cluster_options(fn: F) -> F:
    fn = click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG",
                      help="Kubeconfig file (default $KUBECONFIG, ~/.kube/config).")(fn)
    return click.option("--context", help="Kubeconfig context (default: the current one).")(fn)


def registry_flags(fn: F) -> F:
    fn = click.option("--plain-http", is_flag=True,
                      help="Talk HTTP to the registry (implied for loopback addresses).")(fn)
    return click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
                        help="CA bundle for a registry with a private CA.")(fn)


def progress_for(quiet: bool, verbose: bool) -> Progress:
    return Progress(quiet=quiet, verbose=verbose, log_format=current_log_format())


def fmt(output: str) -> OutputFormat:
    assert output in ("text", "json", "yaml")
    return output  # type: ignore[return-value]


def given(ctx: click.Context, name: str) -> bool:
    """Was this parameter set on the command line (or by its env var), not left at default?"""
    source = ctx.get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def set_path(document: dict[str, Any], dotted: str, value: Any) -> None:
    node = document
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value

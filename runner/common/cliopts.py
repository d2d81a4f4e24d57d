"""Flags every lading command shares, as click decorators, and turning flags into plan
fields: a flag given on the command line overrides the plan file; one left at its default
does not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from runner.common.output import OutputFormat, Progress

F = TypeVar("F", bound=Callable[..., Any])


def output_options(fn: F) -> F:
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
    return Progress(quiet=quiet, verbose=verbose)


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

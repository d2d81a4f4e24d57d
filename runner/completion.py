"""`lading completion SHELL`: the shell completion script, from click's completion support."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_LADING_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> None:
    """Print the completion script for bash, zsh or fish.

    \b
    Examples:
      eval "$(lading completion bash)"                        # in ~/.bashrc
      eval "$(lading completion zsh)"                         # in ~/.zshrc
      lading completion fish > ~/.config/fish/completions/lading.fish
    """
    root = ctx.find_root().command
    completion_class = get_completion_class(shell)
    assert completion_class is not None  # every name in SHELLS is registered by click
    click.echo(completion_class(root, {}, "lading", COMPLETE_VAR).source())

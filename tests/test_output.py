"""Progress and text output: a live line in a terminal, plain lines in logs, JSON lines for
control planes; coloured diffs only in a terminal; completion and an example in every --help."""

from __future__ import annotations

import io
import json

import click
import pytest

from plans.install import DiffResult, ObjectDrift
from runner.commands import COMMANDS, cli
from runner.common.output import Progress, colour_diff, emit, strip_ansi
from tests.clirun import lading


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_writes_one_line_per_event_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream)
    progress("fetching")
    progress.detail("hidden without -v")
    progress("applying 3/10")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("] fetching")
    assert lines[1].endswith("] applying 3/10")


def test_progress_rewrites_one_live_line_in_a_terminal(monkeypatch) -> None:
    monkeypatch.delenv("TERM", raising=False)
    stream = Terminal()
    progress = Progress(stream=stream)
    assert progress.live
    progress("stage crds-namespaces: applying 2 of 2\nsecond line not shown live")
    progress("waiting for 3 objects")
    assert "\n" not in stream.getvalue()
    assert stream.getvalue().count("\r\x1b[K") == 2
    assert "second line" not in stream.getvalue()
    progress.log("warning", "registry is slow")  # warnings stay on screen
    progress.finish()
    progress.finish()
    text = stream.getvalue()
    assert text.endswith("warning: registry is slow\n")
    assert text.count("\n") == 2


def test_emit_ends_a_live_line_before_the_result(monkeypatch) -> None:
    monkeypatch.delenv("TERM", raising=False)
    stream = Terminal()
    progress = Progress(stream=stream)
    progress("working")
    emit({"a": 1}, "json", str, stream=stream)
    assert stream.getvalue().index("working\n") < stream.getvalue().index("{")


def test_progress_json_lines_carry_time_level_event_message_and_fields() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream, log_format="json", verbose=True)
    assert not progress.live
    progress("install: app@sha256:…", event="start", kind="InstallPlan")
    progress.detail("dry-run ok")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert records[0]["event"] == "start"
    assert records[0]["kind"] == "InstallPlan"
    assert records[0]["level"] == "info"
    assert records[0]["time"].endswith("Z")
    assert records[1]["level"] == "debug"
    assert all({"time", "level", "event", "message", "elapsed"} <= set(r) for r in records)


def test_quiet_progress_still_reports_warnings_and_errors() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream, quiet=True)
    progress("dropped")
    progress.log("error", "kept")
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]
    assert stream.getvalue().rstrip().endswith("error: kept")


def _drift() -> DiffResult:
    diff = "--- live\n+++ artifact\n@@ -1 +1 @@\n-replicas: 1\n+replicas: 3\n"
    return DiffResult(digest="sha256:" + "a" * 64, ref="r@sha256:" + "a" * 64, in_sync=False,
                      objects=[ObjectDrift(id="apps/v1/Deployment/shop/web", state="drifted",
                                           diff=diff)])


def _render(result: DiffResult) -> str:
    return "\n".join(o.diff or "" for o in result.objects)


def test_diff_output_is_coloured_in_a_terminal_only(monkeypatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal, pipe = Terminal(), io.StringIO()
    emit(_drift(), "text", _render, stream=terminal)
    emit(_drift(), "text", _render, stream=pipe)
    assert "\x1b[31m-replicas: 1\x1b[0m" in terminal.getvalue()
    assert "\x1b[32m+replicas: 3\x1b[0m" in terminal.getvalue()
    assert "\x1b[" not in pipe.getvalue()
    assert strip_ansi(terminal.getvalue()) == pipe.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    emit(_drift(), "text", _render, stream=plain)
    assert plain.getvalue() == pipe.getvalue()


def test_colour_diff_leaves_context_lines_alone() -> None:
    assert colour_diff(" unchanged: 1") == " unchanged: 1"


def _commands(group: click.Group, prefix: str = "lading") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        out.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            out.extend(_commands(command, f"{prefix} {name}"))
    return out


def test_the_lazy_command_table_matches_the_commands_it_loads() -> None:
    for name, (_, _, short_help) in COMMANDS.items():
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        assert command.name == name
        assert command.get_short_help_str(limit=80) == short_help, name


def test_version_and_help_import_no_verb_module() -> None:
    import subprocess
    import sys

    probe = ("import sys; from runner.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('kubernetes', 'oras', 'pydantic', 'yaml') if m in sys.modules]\n"
             "print('heavy:', heavy)")
    for args in (["--version"], ["--help"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                             text=True, check=True).stdout
        assert "heavy: []" in out, (args, out)


def test_the_version_is_the_distribution_s() -> None:
    import tomllib
    from pathlib import Path

    from runner import __version__

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert __version__ == project["project"]["version"]


def test_every_command_help_has_an_example(capsys, monkeypatch) -> None:
    missing = []
    for path, _ in _commands(cli):
        ran = lading(capsys, monkeypatch, *path.split()[1:], "--help")
        assert ran.code == 0, (path, ran.err)
        if "Example" not in ran.out:
            missing.append(path)
    assert not missing, f"--help without an example: {missing}"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_for_each_shell(capsys, monkeypatch, shell: str) -> None:
    ran = lading(capsys, monkeypatch, "completion", shell)
    assert ran.code == 0
    assert "_LADING_COMPLETE" in ran.out


def test_bash_completion_completes_commands_and_flags(capsys, monkeypatch) -> None:
    monkeypatch.setenv("_LADING_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "lading ins")
    monkeypatch.setenv("COMP_CWORD", "1")
    ran = lading(capsys, monkeypatch)
    assert "plain,install" in ran.out.splitlines()
    monkeypatch.setenv("COMP_WORDS", "lading run --log-format ")
    monkeypatch.setenv("COMP_CWORD", "3")
    ran = lading(capsys, monkeypatch)
    assert {"plain,text", "plain,json"} <= set(ran.out.splitlines())

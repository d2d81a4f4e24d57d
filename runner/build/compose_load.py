"""Loading a compose project: the file, its variables, interpolation, schema validation and each
service's environment, resolved the way `docker compose config` resolves them.

Variables for interpolation come from the env files (`--env-file`, else the `.env` beside the
compose file when there is one), and the build's environment overrides them, as in compose.
The names read from the build's environment are recorded in the artifact (never the values),
so a digest that changed because of the environment says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plans.documents import read_text
from runner.build.compose_spec import load_compose, validate_compose
from runner.build.interpolate import Lookups, interpolate_tree, parse_env_file
from runner.common.errors import InputError
from runner.common.workspace import confine


@dataclass(frozen=True)
class ComposeProject:
    """A compose file after interpolation and validation, with each service's environment
    resolved (env_file then `environment`, bare names looked up in the variables)."""

    name: str
    document: dict[str, Any]
    environments: dict[str, dict[str, str]]
    file: str
    env_files: list[str] = field(default_factory=list)
    from_environment: list[str] = field(default_factory=list)  # variable names, not values
    unset: list[str] = field(default_factory=list)


def _read(path: Path, what: str) -> str:
    try:
        return read_text(path, what)
    except FileNotFoundError:
        raise InputError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory, not a file") from None


def load_project(
    compose_file: Path,
    display: str,
    env_files: list[tuple[Path, str]],
    environ: Mapping[str, str] | None = None,
) -> ComposeProject:
    """`env_files` are (path, display) pairs, e.g. from --env-file; without any, the `.env`
    next to the compose file is read when it exists."""
    environ = os.environ if environ is None else environ
    directory = compose_file.parent
    text = _read(compose_file, f"compose file {display}")
    if not env_files and (directory / ".env").is_file():
        env_files = [(directory / ".env", f"{Path(display).parent / '.env'}")]
    seen = Lookups()
    file_vars: dict[str, str] = {}
    for path, shown in env_files:
        parsed = parse_env_file(_read(path, f"env file {shown}"), shown,
                                {**file_vars, **environ}, seen)
        file_vars.update({k: v for k, v in parsed.items() if v is not None})
    # The build's environment wins over env files, as in compose.
    variables = {**file_vars, **environ}
    raw = load_compose(text, display)
    document = interpolate_tree(raw, variables, display, seen)
    validate_compose(document, display)
    services: dict[str, Any] = document.get("services") or {}
    environments = {
        name: _service_environment(name, spec or {}, directory, display, variables, seen)
        for name, spec in services.items()
    }
    name = document.get("name") or directory.resolve().name
    from_env = sorted(n for n in seen.names if n in environ)
    unset = sorted(seen.unset)
    return ComposeProject(
        name=str(name),
        document=document,
        environments=environments,
        file=compose_file.name,
        env_files=[shown for _, shown in env_files],
        from_environment=from_env,
        unset=unset,
    )


def _service_environment(
    service: str,
    spec: dict[str, Any],
    directory: Path,
    display: str,
    variables: Mapping[str, str],
    seen: Lookups,
) -> dict[str, str]:
    values: dict[str, str | None] = {}
    for i, entry in enumerate(_env_file_entries(spec.get("env_file"))):
        path_text, required = entry
        field_name = f"services.{service}.env_file[{i}]"
        # A compose file may only name env files inside its own directory: a plan's compose
        # file must not pull the build machine's files into a ConfigMap or Secret.
        path = confine(path_text, directory, f"{display}: {field_name}")
        if not path.is_file():
            if required:
                raise InputError(f"{display}: {field_name}: {path_text!r} does not exist")
            continue
        values.update(parse_env_file(_read(path, f"env file {path_text}"),
                                     path_text, variables, seen))
    values.update(_environment(spec.get("environment")))
    resolved: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            # A bare name takes its value from the variables, and stays unset without one.
            value = seen.get(variables, key)
        if value is not None:
            resolved[key] = value
    return resolved


def _env_file_entries(value: Any) -> list[tuple[str, bool]]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    entries = []
    for item in items:
        if isinstance(item, str):
            entries.append((item, True))
        else:
            entries.append((str(item["path"]), _truthy(item.get("required", True))))
    return entries


def _environment(value: Any) -> dict[str, str | None]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): None if v is None else _scalar(v) for k, v in value.items()}
    out: dict[str, str | None] = {}
    for item in value:
        key, sep, text = str(item).partition("=")
        out[key] = text if sep else None
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")

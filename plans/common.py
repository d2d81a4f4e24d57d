"""What every plan and result shares: the API version, strictness, and loading from files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from plans.documents import load_json, load_yaml, read_text
from plans.errors import InputError

API_VERSION = "lading.dev/v1"
SUPPORTED_API_VERSIONS = (API_VERSION,)


class Strict(BaseModel):
    """Unknown fields are errors (a typo must not silently do nothing) and types are strict
    (`"true"` is not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


class Result(BaseModel):
    """Result documents: lenient on input (control planes read them back), stable on output."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


M = TypeVar("M", bound=BaseModel)


def format_validation_error(error: ValidationError, what: str) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = (
                "unknown field (check the spelling; `lading schema build|install` prints "
                "what is accepted)"
            )
        lines.append(f"{path}: {message}")
    return f"invalid {what}:\n  " + "\n  ".join(lines)


def validate_document(model: type[M], document: Any, what: str) -> M:
    try:
        return model.model_validate(document)
    except ValidationError as e:
        raise InputError(format_validation_error(e, what)) from None


def read_document(path: Path | None, text: str | None = None) -> Any:
    """A plan document from a YAML or JSON file (or text, e.g. stdin), read within lading's
    input limits (plans.documents)."""
    where = str(path) if path else "<stdin>"
    if text is None:
        if path is None:
            raise InputError("no plan given")
        text = read_text(path, f"plan {where}")
    try:
        if text.lstrip().startswith("{"):
            return load_json(text, where)
        return load_yaml(text, where)
    except InputError as e:
        detail = e.message.removeprefix(where).removeprefix(" is not valid JSON").lstrip(": ")
        raise InputError(
            f"plan {where} is neither valid YAML nor JSON: {detail}", hint=e.hint
        ) from None

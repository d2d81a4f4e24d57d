"""JSON Schemas of the plans and results, generated from the models.

`plans/schemas/` holds the generated files so control planes can validate plans without
Python; `lading schema --write` regenerates them and a test fails when they are stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from plans.app import App
from plans.build import BuildPlan, BuildResult
from plans.common import API_VERSION
from plans.install import DiffResult, InstallPlan, InstallResult
from plans.ship import RunRequest, ShipPlan, ShipResult, SignPlan, Submission, VerifyPlan
from plans.supply import SignResult, VerifyResult

SCHEMA_DIR = Path(__file__).with_name("schemas")
ID_BASE = "https://lading.dev/schemas/v1/"

# name on the command line → (model, file, mode). Plans are what a control plane writes, so
# their schema describes validation; results are what it reads, so theirs describes output.
SCHEMAS: dict[str, tuple[type[BaseModel], str, Literal["validation", "serialization"]]] = {
    "build": (BuildPlan, "build-plan.json", "validation"),
    "install": (InstallPlan, "install-plan.json", "validation"),
    "build-result": (BuildResult, "build-result.json", "serialization"),
    "install-result": (InstallResult, "install-result.json", "serialization"),
    "diff-result": (DiffResult, "diff-result.json", "serialization"),
    # The App spec `lading build --app` generates objects from (plans/app.py).
    "app": (App, "app.json", "validation"),
    # The Temporal contract (plans/ship.py): activity inputs beyond the two runners' plans,
    # the workflows' inputs, and what they and `lading submit` return.
    "verify": (VerifyPlan, "verify-plan.json", "validation"),
    "sign": (SignPlan, "sign-plan.json", "validation"),
    "run-request": (RunRequest, "run-request.json", "validation"),
    "ship": (ShipPlan, "ship-plan.json", "validation"),
    "verify-result": (VerifyResult, "verify-result.json", "serialization"),
    "sign-result": (SignResult, "sign-result.json", "serialization"),
    "ship-result": (ShipResult, "ship-result.json", "serialization"),
    "submission": (Submission, "submission.json", "serialization"),
}


def schema(name: str) -> dict[str, Any]:
    model, filename, mode = SCHEMAS[name]
    generated = model.model_json_schema(mode=mode)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": ID_BASE + filename,
        "x-lading-api-version": API_VERSION,
        **generated,
    }


def schema_text(name: str) -> str:
    return json.dumps(schema(name), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema into `directory`; returns the files whose content changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, (_, filename, _) in SCHEMAS.items():
        path = directory / filename
        text = schema_text(name)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Files in `directory` that differ from what the models generate today."""
    return [
        filename
        for name, (_, filename, _) in SCHEMAS.items()
        if not (directory / filename).exists()
        or (directory / filename).read_text() != schema_text(name)
    ]

"""How lading talks to registries: TLS, credentials and time bounds, built in one place from
the flags and plan fields every command shares (`RegistryOptions.of`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.common.errors import InputError

# name, environment variable, lowest accepted value
_TIMEOUT_SETTINGS = (
    ("connect", "LADING_REGISTRY_CONNECT_TIMEOUT", 0.1),
    ("stall", "LADING_REGISTRY_STALL_TIMEOUT", 0.1),
    ("min_rate", "LADING_REGISTRY_MIN_RATE", 1.0),
    ("attempts", "LADING_REGISTRY_ATTEMPTS", 1.0),
)


@dataclass(frozen=True)
class RegistryTimeouts:
    """Bounds on every registry operation (one manifest, one blob), so a registry that stalls
    or trickles fails in bounded time. An operation may take `stall` seconds plus one second
    per `min_rate` bytes it moves, retries included; each attempt also gives up after `stall`
    seconds without a byte moving."""

    connect: float = 10.0  # seconds to open a connection
    stall: float = 60.0  # seconds without progress
    min_rate: float = 16 * 1024  # bytes per second a transfer must keep up, on average
    attempts: int = 4  # tries on HTTP 429/5xx, time-outs and dropped connections

    def budget(self, size: int) -> float:
        """Seconds an operation moving `size` bytes may take."""
        return self.stall + size / self.min_rate

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RegistryTimeouts:
        env = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for name, variable, lowest in _TIMEOUT_SETTINGS:
            text = env.get(variable, "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            if not value >= lowest or value == float("inf"):
                raise InputError(
                    f"{variable}={text!r} is not a number of at least {lowest:g}",
                    hint="registry time-outs are seconds, LADING_REGISTRY_MIN_RATE is bytes per "
                    "second, LADING_REGISTRY_ATTEMPTS a count",
                )
            values[name] = value
        attempts = int(values.pop("attempts", cls.attempts))
        return cls(**values, attempts=attempts)


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to registries. Plain HTTP is implied for loopback hosts, as Docker does."""

    plain_http: bool = False
    ca_file: Path | None = None
    docker_config: Path | None = None  # a config.json; default $DOCKER_CONFIG or ~/.docker
    timeouts: RegistryTimeouts = field(default_factory=RegistryTimeouts.from_env)

    @classmethod
    def of(cls, plain_http: bool = False, ca_file: str | Path | None = None) -> RegistryOptions:
        """From `--plain-http`/`--ca-file` or a plan's `plain_http`/`ca_file`."""
        return cls(plain_http=plain_http, ca_file=Path(ca_file) if ca_file else None)

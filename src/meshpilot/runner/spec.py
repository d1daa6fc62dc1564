"""What `meshpilot up` reads from a service's `run:` entries: how to start local instances."""

from __future__ import annotations

import string
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from meshpilot.mesh.fields import Labels, LocalityName, Port, SpecModel

RUN_PLACEHOLDERS = ("ip", "app_port", "service", "version")


def _command_template(command: str) -> str:
    """`run:` commands are templates filled in per replica; only known placeholders."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(command) if name is not None]
    except ValueError as err:
        raise PydanticCustomError(
            "template",
            "not a valid template ({error}); write {escaped} for a literal brace",
            {"error": str(err), "escaped": "'{{' or '}}'"},
        ) from None
    unknown = [f for f in fields if f not in RUN_PLACEHOLDERS]
    if unknown:
        raise PydanticCustomError(
            "template",
            "unknown placeholder {name}; use {known}",
            {
                "name": "'{" + unknown[0] + "}'",
                "known": ", ".join("{" + p + "}" for p in RUN_PLACEHOLDERS),
            },
        )
    return command


class RunSpec(SpecModel):
    """How `meshpilot up` starts local instances of a service."""

    command: Annotated[str, Field(min_length=1), AfterValidator(_command_template)]
    version: str | None = None
    replicas: int = Field(default=1, ge=1, le=200)
    app_port: Port = 8080
    labels: Labels = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    locality: LocalityName | None = None  # region/zone/subzone of every replica

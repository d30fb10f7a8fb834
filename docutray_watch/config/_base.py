"""What every config model shares: the strict `_Model` base, the error that blames one
field, the name pattern of pipelines and nodes, and how paths are compared."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class _FieldError(ValueError):
    """A check of a whole model that blames one of its fields: the error names that field's path.

    pydantic reports a model validator's error at the model itself (`pipelines[0]`); the loader
    appends `loc` (e.g. `("sinks", 1, "id")`) so the message points at the offending key.
    """

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))

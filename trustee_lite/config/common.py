"""What every recipe section shares: strict frozen sections, the number types, the cross-field
problem type, and reading the recipe's relative paths from its own folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Level = Annotated[int, Field(ge=1, le=100)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FieldProblem(ValueError):
    """A cross-field check's finding about one field of its section."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def base_folder(info: ValidationInfo) -> Path:
    """The folder relative paths in the recipe are read from (the recipe's own)."""
    return (info.context or {}).get("base") or Path.cwd()


def local_path(base: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return (path if path.is_absolute() else base / path).resolve()

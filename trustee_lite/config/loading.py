"""Reading a recipe: YAML -> typed, validated, frozen Recipe. Every problem is one line naming the
field (`recipe.yaml: policy.lora.rank: must be > 0, got 0`), all of them at once; `--set`
overrides are laid over the file's values first."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from trustee_lite.config.common import FieldProblem, local_path
from trustee_lite.config.models import EMBEDDED
from trustee_lite.config.run import Recipe
from trustee_lite.errors import UserError, UserErrors


class NumbersLoader(yaml.SafeLoader):
    """YAML as people write it: `1e-4`, `5e-6` and `1E3` are numbers (YAML 1.2), where YAML 1.1,
    which PyYAML reads, wants a dot (`1.0e-4`) and reads them as strings."""


NumbersLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str):
    """yaml.safe_load, with exponent floats read as numbers (NumbersLoader)."""
    return yaml.load(text, Loader=NumbersLoader)  # noqa: S506 - a SafeLoader subclass


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe file; relative paths inside it are resolved against its folder.
    `overrides` are `section.key=value` settings (values in YAML) laid over the file's."""
    path = Path(path)
    place = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(str(path), "recipe file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise UserError(str(path), f"cannot read recipe: {err.__class__.__name__}") from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(place, f"{where}YAML syntax error: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(place, f"must be a mapping of sections, got {type(data).__name__}")
    for setting in overrides or ():
        apply_override(data, setting)
    return parse_recipe(data, place=place, base_dir=path.resolve().parent)


def apply_override(data: dict, setting: str) -> None:
    """Set `a.b.c=value` in the recipe's data (the value read as YAML: 0, 1e-4, true, [a, b])."""
    key, sep, text = setting.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise UserError(f"--set {setting}", "must be section.key=value, e.g. train.learning_rate=0")
    try:
        value = read_yaml(text)
    except yaml.YAMLError:
        raise UserError(f"--set {setting}", "the value is not valid YAML") from None
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {setting}", f"{'.'.join(parts[:i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def parse_recipe(data: dict, place: str = "recipe", base_dir: Path | None = None) -> Recipe:
    """Validate a recipe given as a dict (already parsed YAML); every problem is reported."""
    base = base_dir or Path.cwd()
    try:
        recipe = Recipe.model_validate({**data, "source": place}, context={"base": base})
    except ValidationError as err:
        raise UserErrors([f"{place}: {_loc(error['loc'], error)}: {_describe(error)}" for error in err.errors()]) from None
    return _resolve_paths(recipe, base)


def _resolve_paths(recipe: Recipe, base: Path) -> Recipe:
    """File references made absolute (relative to the recipe's folder; the validators checked them)."""
    sections = {}
    tools = recipe.tools
    sections["tools"] = tools.model_copy(update={
        "file": None if tools.file is None else str(local_path(base, tools.file)),
        "openapi": [str(local_path(base, spec)) for spec in tools.openapi],
        "mcp": [server.model_copy(update={"cwd": str(local_path(base, server.cwd or "."))}) for server in tools.mcp],
    })
    if recipe.tasks is not None:
        sections["tasks"] = recipe.tasks.model_copy(update={"file": str(local_path(base, recipe.tasks.file))})
    for name in ("policy", "simulator"):
        cfg = getattr(recipe, name)
        update = {}
        if cfg.model != EMBEDDED and cfg.backend != "openai" and local_path(base, cfg.model).exists():
            update["model"] = str(local_path(base, cfg.model))
        if getattr(cfg, "adapter", None) is not None:
            update["adapter"] = str(local_path(base, cfg.adapter))
        sections[name] = cfg.model_copy(update=update)
    return recipe.model_copy(update=sections)


def _loc(loc: tuple, error: dict | None = None) -> str:
    problem = (error or {}).get("ctx", {}).get("error")
    if isinstance(problem, FieldProblem):  # a cross-field check names its field
        loc = (*loc, problem.field)
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_TYPE_NAMES = {
    "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "string_type": "a string", "bool_type": "true or false", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
_COMPARISONS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _describe(error: dict) -> str:
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key" + _did_you_mean(error["loc"])
    if kind in _COMPARISONS:
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {_COMPARISONS[kind]} {bound}, got {got!r}"
    if kind == "too_short":
        return f"must list at least {ctx.get('min_length', 1)}, got none" if not got else f"too short: {got!r}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {got!r}"
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}, got {type(got).__name__} {got!r}"
    if kind == "value_error":
        problem = ctx.get("error")
        return problem.message if isinstance(problem, FieldProblem) else str(problem or error["msg"])
    return error["msg"]


def _did_you_mean(loc: tuple) -> str:
    """For an unknown key: the known key it most likely stands for."""
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), [f for f in model.model_fields if f != "source"], n=1)
    return f" (did you mean {close[0]}?)" if close else ""

"""The package's shape holds: data flows one way (every import, lazy ones inside functions
included, points to its own layer or a lower one, in the order docs/method.md states, read from
there so the page and the check cannot drift apart); a command module is its flags and one call
into the domain; no module outgrows a reader."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "trustee_lite"


def layer_order() -> dict[str, int]:
    """Top-level module or folder name -> its layer's rank, lowest first."""
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    line = re.search(r"^errors, .* < cli.*$", text, flags=re.M).group(0)
    return {name.strip(): rank for rank, layer in enumerate(line.split("<")) for name in layer.split(",")}


def unit(module: str) -> str:
    """The layer unit of a dotted module name inside the package: its first part."""
    return module.split(".")[1] if "." in module else ""


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, the unit it imports) of every import of the package in one file."""
    here = "trustee_lite." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, unit(a.name)) for a in node.names if a.name.startswith("trustee_lite.")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parent = here.split(".")[: -node.level]
                base = ".".join(parent + ([base] if base else []))
            if base == "trustee_lite":  # from trustee_lite import prompts
                out += [(node.lineno, a.name) for a in node.names]
            elif base.startswith("trustee_lite."):
                out.append((node.lineno, unit(base)))
    return out


def test_the_layer_line_names_every_module():
    order = layer_order()
    units = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert units - set(order) == set(), "modules in no layer: add them to the line in docs/method.md"
    assert set(order) - units == set(), "the layer line names modules that do not exist"


def test_no_module_imports_a_higher_layer():
    order = layer_order()
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if name == "__init__":
            continue
        for line, target in imports(path):
            if order[target] > order[name]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({name} is below it)")
    assert upward == []


def test_a_command_module_is_its_help_its_flags_and_its_run():
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = []
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                    isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):  # imports, the docstring
                continue
            if isinstance(node, ast.Assign):
                names += [t.id for t in node.targets]
            else:
                names.append(getattr(node, "name", type(node).__name__))
        assert names == ["HELP", "add_arguments", "run"], path.name


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}

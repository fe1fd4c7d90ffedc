"""The repository documents itself: every module of the package is in the README's code map, and
nothing cites a design document that lives outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "trustee_lite"


def test_every_module_is_in_the_code_map():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code_map = readme[readme.index("trustee_lite/\n"):]
    listed = set(re.findall(r"^  (\S+\.py)\s", code_map, flags=re.M))
    modules = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")} - {"__init__.py"}
    assert modules - listed == set(), "modules missing from the README's code map"
    assert listed - modules == set(), "the code map names modules that do not exist"
    assert (ROOT / "docs" / "method.md").is_file()


def test_no_file_cites_a_design_document_outside_the_repository():
    files = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md", ".yaml", ".jinja", ".toml")
             and not {".venv", ".git", "cache", "runs"} & set(p.relative_to(ROOT).parts)]
    citing = [str(p.relative_to(ROOT)) for p in files
              if p != Path(__file__).resolve() and re.search(r"DESIGN\.md|\.\./shared", p.read_text(encoding="utf-8"))]
    assert citing == []

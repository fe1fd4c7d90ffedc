"""Prompt texts written for this project, one Markdown file a prompt, with $placeholders."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from string import Template


@lru_cache(maxsize=None)
def _template(name: str) -> Template:
    return Template(files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8"))


def render(name: str, **fields: object) -> str:
    """Fill a prompt file's $placeholders; a missing field is an error, not an empty string."""
    return _template(name).substitute({key: str(value) for key, value in fields.items()})


def policy_system_prompt(level: int) -> str:
    """The policy's system prompt at a curriculum level: 0 is the detailed guide, 3 one line."""
    return _template(f"policy_system_{max(0, min(3, level))}").template.strip()

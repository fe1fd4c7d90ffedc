"""The recipe's tool pool, from its sources: a tool file (or the built-in library when no source
is named), OpenAPI specs, MCP servers, and toolsets the simulator writes. Listing comes before
any model is loaded, so a bad source stops a command at once; synthesis needs the simulator and
comes after it starts."""

from __future__ import annotations

from pathlib import Path

from trustee_lite.config import Recipe
from trustee_lite.env.pool.fit import check_fit
from trustee_lite.env.pool.mcp import mcp_entries
from trustee_lite.env.pool.openapi import openapi_entries
from trustee_lite.env.pool.synthesis import DomainResult, synthesize
from trustee_lite.env.pool.tools import ToolEntry, ToolPool, build_pool, file_entries
from trustee_lite.errors import UserError
from trustee_lite.progress import counted, say


async def listed_entries(recipe: Recipe) -> list[ToolEntry]:
    """Every source but synthesis: the file (or built-in library), the specs, the MCP servers."""
    tools = recipe.tools
    entries = file_entries(tools.file) if tools.file is not None or tools.builtin else []
    for spec in tools.openapi:
        entries += openapi_entries(spec)
    entries += await mcp_entries(tools.mcp, recipe.source)
    if entries:  # check them now: a bad tool stops a command before any model loads
        pool = build_pool(entries)
        if tools.synthesize is None:
            pool.only(tools.categories, recipe.source)
    return entries


async def open_pool(recipe: Recipe, store, sim=None, listed: list[ToolEntry] | None = None,
                    quiet: bool = False) -> tuple[ToolPool, list[DomainResult]]:
    """The pool: the listed entries (listed again when not given) and the synthesized toolsets,
    stored ones reused and the missing ones written by `sim` (None: stored ones only). Says what
    loading changed and what synthesis did, one line each, unless `quiet`."""
    entries = await listed_entries(recipe) if listed is None else list(listed)
    results: list[DomainResult] = []
    if recipe.tools.synthesize is not None:
        if sim is not None and not quiet:
            say(f"tools.synthesize: {counted(len(recipe.tools.synthesize.domains), 'domain')}")
        written, results = await synthesize(recipe.tools.synthesize, store, sim, recipe.seed,
                                            on_domain=None if quiet else lambda r: say(f"tools.synthesize: {r.line()}"))
        if sim is not None and not written and not entries:
            drafted = sum(r.drafted for r in results)
            raise UserError(f"{recipe.source}: tools.synthesize",
                            f"the simulator wrote no valid toolset (0 valid of {drafted} drafted): "
                            "try a larger simulator model, or more tools.synthesize.attempts")
        entries += written
    if not entries:  # synthesis only, nothing stored yet, and no simulator to write it
        return ToolPool({}), results
    pool = build_pool(entries).only(recipe.tools.categories, recipe.source)
    check_fit(recipe, list(pool.tools.values()))
    if pool.normalised() and not quiet:
        say(f"{_sources(recipe)}: {pool.normalised()}")
    return pool, results


def preview_pool(recipe: Recipe, store=None, stand_in: bool = True) -> tuple[ToolPool, str]:
    """The pool without any model (for `check` and `tools list`): the listed sources and the
    toolsets stored in `store`; and one line describing it. A recipe whose only source is
    synthesis with nothing stored yet has an empty pool, or with `stand_in` the built-in
    library in its place, said so."""
    import asyncio

    pool, results = asyncio.run(open_pool(recipe, store, quiet=True))
    line = pool_line(pool)
    missing = sum(r.reused < recipe.tools.synthesize.toolsets_per_domain for r in results) if results else 0
    if missing:
        line += f"; {counted(missing, 'synthesized domain')} not written yet"
    if not pool.groups and stand_in:
        return build_pool(file_entries(None)), line + " (the built-in library stands in)"
    return pool, line


MAX_DESCRIPTION = 60  # characters of a toolset's description in the listing


def pool_listing(recipe: Recipe, store, names: bool) -> str:
    """`tools list`: one row per toolset (category, toolset, tool count, description; every tool's
    name too with `names`), then the pool's line."""
    pool, line = preview_pool(recipe, store, stand_in=False)
    if not pool.groups:  # synthesis only, nothing written yet
        return line
    rows = [("category", "toolset", "tools", "description")]
    for category, toolsets in pool.groups.items():
        for toolset, tools in toolsets.items():
            described = pool.descriptions.get(category, {}).get(toolset, "")
            short = described if len(described) <= MAX_DESCRIPTION else described[: MAX_DESCRIPTION - 3] + "..."
            rows.append((category, toolset, str(len(tools)), short))
            if names:
                rows += [("", "", "", _named(pool, t["function"]["name"])) for t in tools]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    table = "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[3]]).rstrip() for row in rows)
    return f"{table}\n{line}"


def _named(pool: ToolPool, name: str) -> str:
    original = pool.original(name)
    return f"  {name}" + (f"  (source: {original!r})" if original != name else "")


def pool_line(pool: ToolPool) -> str:
    """Counts of a pool, and what loading changed."""
    toolsets = sum(len(sets) for sets in pool.groups.values())
    line = f"{counted(len(pool.groups), 'category', 'categories')}, {counted(toolsets, 'toolset')}, {counted(len(pool.tools), 'tool')}"
    return line + (f" ({pool.normalised()})" if pool.normalised() else "")


def _sources(recipe: Recipe) -> str:
    tools = recipe.tools
    names = [Path(tools.file).name] if tools.file else ["tool_library.json"] if tools.builtin else []
    names += [Path(spec).name for spec in tools.openapi] + ["MCP servers"] * bool(tools.mcp)
    return ", ".join(names + ["synthesized toolsets"] * (tools.synthesize is not None))

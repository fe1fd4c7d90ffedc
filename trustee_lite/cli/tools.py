"""`tools list RECIPE` and `tools export RECIPE --out FILE`: the recipe's tool pool, from all its
sources, as a table, or as one tool file (synthesized toolsets included)."""

from __future__ import annotations

import sys
from pathlib import Path

from trustee_lite.cli import add_db, add_recipe, print_json

HELP = "show the recipe's tool pool (list) or write it as one tool file (export)"
MAX_DESCRIPTION = 60


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    shown = actions.add_parser("list", help="categories, toolsets, tool counts and what loading changed")
    add_recipe(shown, seed_help=None)
    shown.add_argument("--names", action="store_true", help="also list every tool, with its source's name when renamed")
    add_db(shown, "the stored synthesized toolsets")
    export = actions.add_parser("export", help="write the pool as a tool file (writes missing synthesized toolsets first)")
    add_recipe(export, seed_help=None)
    export.add_argument("--out", required=True, help="the tool file to write (.json, .yaml or .yml)")
    add_db(export, "the synthesized toolsets and the simulator's cache")


def run(args) -> int:
    from trustee_lite.config import load_recipe
    from trustee_lite.store import Store

    recipe = load_recipe(args.recipe, args.overrides)
    with Store(args.db) as store:
        if args.action == "list":
            return _list(recipe, store, args.names)
        return _export(recipe, store, Path(args.out), args.db)


def _list(recipe, store, names: bool) -> int:
    from trustee_lite.env.pool.sources import preview_pool

    pool, line = preview_pool(recipe, store, stand_in=False)
    if not pool.groups:  # synthesis only, nothing written yet
        print(line, flush=True)
        return 0
    rows = [("category", "toolset", "tools", "description")]
    for category, toolsets in pool.groups.items():
        for toolset, tools in toolsets.items():
            described = pool.descriptions.get(category, {}).get(toolset, "")
            rows.append((category, toolset, str(len(tools)), _short(described)))
            if names:
                rows += [("", "", "", _named(pool, t["function"]["name"])) for t in tools]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print("\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[3]]).rstrip() for row in rows), flush=True)
    print(line, flush=True)
    return 0


def _named(pool, name: str) -> str:
    original = pool.original(name)
    return f"  {name}" + (f"  (source: {original!r})" if original != name else "")


def _short(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."


def _export(recipe, store, out: Path, db: str) -> int:
    import asyncio

    from trustee_lite.errors import UserError

    if out.suffix not in (".json", ".yaml", ".yml"):
        raise UserError("--out", f"must end in .json, .yaml or .yml, got {out.name!r}")
    pool = asyncio.run(_full_pool(recipe, store))
    data = pool.as_file()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        import orjson

        out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        import yaml

        out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    print_json({"out": str(out), "categories": len(pool.groups),
                "toolsets": sum(len(s) for s in pool.groups.values()), "tools": len(pool.tools)}, db)
    return 0


async def _full_pool(recipe, store):
    """The pool with every synthesized toolset (the simulator starts only if some are missing)."""
    from trustee_lite.env.pool.sources import listed_entries, open_pool

    listed = await listed_entries(recipe)
    synth = recipe.tools.synthesize
    if synth is not None and any(len(store.toolsets(d)) < synth.toolsets_per_domain for d in synth.domains):
        from trustee_lite.runtime import open_simulator

        async with open_simulator(recipe, store) as sim:
            pool, _ = await open_pool(recipe, store, sim, listed)
            return pool
    pool, _ = await open_pool(recipe, store, None, listed)
    return pool

"""Toolsets the simulator invents for named domains (tools.synthesize): fully data-free pools.

The simulator writes one toolset per answer under a grammar (a name, a description, tools whose
parameters are flat properties of primitive types, with optional string enums); each answer is
checked (a required parameter in every tool, a valid JSON Schema; a repeated tool, parameter or
enum value counts once), stored in the database's `toolsets` table, and reused by every later
run that names the domain: the model is asked only for the toolsets a domain still lacks. A
toolset name the domain has already gets a suffix. The prompt does not list the domain's other
toolsets: a small model copies names it is shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from trustee_lite import prompts
from trustee_lite.config import SynthesizeConfig
from trustee_lite.env.pool.tools import ToolEntry, normalize_tool, unique_name
from trustee_lite.env.role import RoleCall, RoleOutputError, SimulationFailed, text_field
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.errors import UserError
from trustee_lite.progress import counted

ROLE = "toolset_writer"
SNAKE = r"^[a-z][a-z0-9_]{2,39}$"
TYPES = ("string", "integer", "number", "boolean")
MAX_PARAMETERS = 3


@dataclass(frozen=True)
class DomainResult:
    """What one domain gave: toolsets reused from the database and written now."""

    domain: str
    reused: int
    written: int
    drafted: int  # model answers read for this domain (each retry counts)
    seconds: float

    def line(self) -> str:
        if not self.drafted:
            return f"{self.domain}: {counted(self.reused, 'stored toolset')} reused"
        return (f"{self.domain}: {counted(self.written, 'toolset')} written ({self.written} valid of {self.drafted} drafted, "
                f"{self.seconds:.0f} s)" + (f", {self.reused} reused" if self.reused else ""))


def request(domain: str, max_tools: int, max_new_tokens: int) -> RoleCall[dict[str, Any]]:
    """Ask for one toolset of the domain."""
    parameter = _object(name={"type": "string", "pattern": r"^[a-z][a-z0-9_]{0,29}$"},
                        type={"type": "string", "enum": list(TYPES)}, description=text_field(80, 5),
                        required={"type": "boolean"}, enum={"type": "array", "items": text_field(30, 1), "maxItems": 6})
    parameter["required"].remove("enum")  # only a string with fixed values has one
    tool = _object(name={"type": "string", "pattern": SNAKE}, description=text_field(120, 10),
                   parameters={"type": "array", "items": parameter, "minItems": 1, "maxItems": MAX_PARAMETERS})
    schema = _object(toolset_name={"type": "string", "pattern": SNAKE}, toolset_description=text_field(150, 10),
                     tools={"type": "array", "items": tool, "minItems": 1, "maxItems": max_tools})
    text = prompts.render(ROLE, domain=domain, max_tools=max_tools)

    def interpret(obj: dict[str, Any]) -> dict[str, Any]:
        tools = {}
        for i, t in enumerate(obj["tools"]):
            tools.setdefault(t["name"], _function(t, f"tools.{i}"))  # a repeated tool: the first one counts
        return {"name": obj["toolset_name"], "description": obj["toolset_description"].strip(),
                "tools": list(tools.values())}

    return RoleCall(role=ROLE, messages=({"role": "user", "content": text},), schema=schema, interpret=interpret,
                    max_new_tokens=max_new_tokens)


def _object(**properties) -> dict[str, Any]:
    """A JSON object schema whose properties are all required, in this order."""
    return {"type": "object", "properties": properties, "required": list(properties)}


def _function(tool: dict[str, Any], where: str) -> dict[str, Any]:
    """A drafted tool as an OpenAI function (a repeated parameter or enum value: the first one
    counts); RoleOutputError when none of its parameters is required or the schema is invalid."""
    properties, required = {}, []
    for p in tool["parameters"]:
        if p["name"] in properties:
            continue
        prop = {"type": p["type"], "description": p["description"].strip()}
        values = list(dict.fromkeys(v.strip() for v in p.get("enum") or [] if v.strip()))
        if values and p["type"] == "string":
            prop["enum"] = values
        properties[p["name"]] = prop
        if p["required"]:
            required.append(p["name"])
    if not required:
        raise RoleOutputError(f"{where}.parameters: none is required")
    fn = {"name": tool["name"], "description": tool["description"].strip(),
          "parameters": {"type": "object", "properties": properties, "required": required}}
    try:
        normalize_tool(fn, where)
    except UserError as err:
        raise RoleOutputError(str(err)) from None
    return {"type": "function", "function": fn}


async def synthesize(cfg: SynthesizeConfig, store, sim: SimulatorClient | None, seed: int,
                     on_domain=None) -> tuple[list[ToolEntry], list[DomainResult]]:
    """The toolsets of every domain: stored ones first, the rest written by the simulator (when
    `sim` is None, only the stored ones; `store` None: nothing stored). `on_domain(result)` after
    each domain."""
    entries, results = [], []
    for domain in cfg.domains:
        stored = store.toolsets(domain) if store is not None else []
        reused = stored[: cfg.toolsets_per_domain]
        start, drafted, written = time.perf_counter(), 0, 0
        if sim is not None and len(reused) < cfg.toolsets_per_domain:
            taken = {t["name"] for t in stored}
            wanted = cfg.toolsets_per_domain - len(reused)
            for attempt in range(wanted * cfg.attempts):
                if written == wanted:
                    break
                before = sim.stats.calls
                call = request(domain, cfg.tools_per_toolset, cfg.max_new_tokens)
                try:
                    toolset = await sim.run(call, seed, ROLE, domain, len(stored), attempt)
                except SimulationFailed:
                    continue
                finally:
                    drafted += sim.stats.calls - before
                name = toolset["name"] if toolset["name"] not in taken else unique_name(toolset["name"], taken)
                store.add_toolset(domain, name, toolset["description"], toolset["tools"], sim.service.backend.model_id)
                taken.add(name)
                written += 1
            reused = reused + store.toolsets(domain)[len(stored):]
        result = DomainResult(domain, min(len(stored), cfg.toolsets_per_domain), written, drafted,
                              time.perf_counter() - start)
        results.append(result)
        if on_domain is not None:
            on_domain(result)
        for toolset in reused:
            entries.extend(ToolEntry(domain, toolset["name"], tool, f"toolsets table: {domain}.{toolset['name']}[{i}]",
                                     toolset["description"]) for i, tool in enumerate(toolset["tools"]))
    return entries, results

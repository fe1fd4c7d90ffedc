"""MCP servers as tool entries: each server's tools, listed through the official `mcp` SDK, become
one toolset (the server's name). The servers are only listed, once, at the start of a command;
during training every call is simulated, so the real service is never touched.

The SDK is optional (`pip install 'trustee-lite[mcp]'`) and imported only here.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys

from trustee_lite.config import McpServer
from trustee_lite.env.pool.tools import ToolEntry
from trustee_lite.errors import UserError

INSTALL = "pip install 'trustee-lite[mcp]'"
MAX_DESCRIPTION = 300  # a server's instructions, as the toolset's description


async def mcp_entries(servers: list[McpServer], place: str) -> list[ToolEntry]:
    """The tools of every server, in the recipe's order."""
    if not servers:
        return []
    try:
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client
    except ImportError:
        raise UserError(f"{place}: tools.mcp", f"the mcp package is not installed: {INSTALL}") from None
    entries = []
    for i, server in enumerate(servers):
        where = f"{place}: tools.mcp[{i}]"
        if server.url is not None:
            target = server.url
        else:
            argv = server.command if isinstance(server.command, list) else shlex.split(server.command)
            env = {k: os.path.expandvars(v) for k, v in (server.env or {}).items()}  # "$TOKEN": from our environment
            params = StdioServerParameters(command=argv[0], args=argv[1:], env=env or None, cwd=server.cwd)
            target = stdio_client(params, errlog=_errlog())  # the server's own messages go to our stderr
        try:
            name, instructions, tools = await asyncio.wait_for(_list(Client, target), server.timeout_s)
        except asyncio.TimeoutError:
            raise UserError(where, f"the server listed no tools within {server.timeout_s:g} s") from None
        except Exception as err:  # noqa: BLE001 - a server that cannot start or answer is the user's to fix
            raise UserError(where, f"cannot list the server's tools: {_reason(err)}") from None
        if not tools:
            raise UserError(where, "the server has no tools")
        toolset = server.name or name or f"server{i}"
        described = (server.description or instructions or "").strip()[:MAX_DESCRIPTION]
        for k, tool in enumerate(tools):
            fn = {"name": tool.name, "description": tool.description or tool.title or "",
                  "parameters": tool.input_schema or {"type": "object", "properties": {}}}
            entries.append(ToolEntry(server.category, toolset, fn, f"{where}.tools[{k}] ({tool.name})", described))
    return entries


async def _list(client_type, target):
    """The server's name, instructions and tools (every page)."""
    async with client_type(target) as client:
        info = client.server_info
        tools, cursor = [], None
        while True:
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return (info.name if info else None), client.instructions, tools


def _errlog():
    """Where a stdio server's stderr goes: ours when it is a real file (a captured or redirected
    sys.stderr is not), else the process's original stderr, else nowhere."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.fileno()
            return stream
        except (AttributeError, OSError, ValueError):
            continue
    return open(os.devnull, "w")  # noqa: SIM115 - lives as long as the server


def _reason(err: BaseException) -> str:
    """The innermost message of an error (the SDK wraps them in exception groups)."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__

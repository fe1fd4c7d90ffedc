"""An MCP server for the tests, written with the official SDK and run over stdio: a notes service
whose tools the pool lists (the tests never call them; training simulates every call)."""

import logging

from mcp.server.mcpserver import MCPServer

logging.disable(logging.WARNING)  # the SDK warns about the slash in "notes/search": that name is on purpose

server = MCPServer("notes", instructions="A personal notes service: write, find and tag notes.")


@server.tool(description="Write a new note.")
def add_note(title: str, body: str, pinned: bool = False) -> str:
    return f"saved {title}"


@server.tool(name="notes/search", description="Find notes whose text contains the words.")
def search_notes(query: str, limit: int = 10) -> list[str]:
    return []


@server.tool(description="Put a tag on a note.")
def tag_note(note_id: int, tag: str) -> str:
    return "ok"


if __name__ == "__main__":
    server.run("stdio")

"""The tool pool and its sources: tool files, OpenAPI specs, MCP servers, synthesized toolsets."""

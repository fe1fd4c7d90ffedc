"""OpenAPI 3 specs as tool entries: each operation a function, tags as toolsets.

An operation's name is its operationId, or its method and path ("get /pets/{petId}", made safe
by the pool). Its properties are the path and query parameters and the JSON request body's
fields (the body as one `body` property when it is not an object or a field name collides).
`$ref`s are resolved by jsonref, local and relative-file ones alike; a schema that refers to
itself is cut after its first level. Header and cookie parameters, and non-JSON bodies, are
left out: an agent does not choose them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from trustee_lite.env.pool.tools import DEFAULT_GROUP, ToolEntry, read_document
from trustee_lite.errors import UserError

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
MAX_DEPTH = 8  # nesting kept from a resolved schema; deeper levels become an untyped object
MAX_DESCRIPTION = 1000
OPENAPI_ONLY = ("nullable", "example", "examples", "xml", "discriminator", "externalDocs")
NAMED_SCHEMAS = ("properties", "patternProperties", "$defs", "definitions")
VALUES = ("default", "enum", "const")  # data, kept as written


def openapi_entries(file: str) -> list[ToolEntry]:
    """The operations of one spec file, in document order."""
    import jsonref

    path = Path(file)
    source = path.name
    doc = read_document(path)
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3"):
        raise UserError(source, "not an OpenAPI 3 document (its `openapi` field must be 3.x; convert Swagger 2 files first)")
    try:
        doc = jsonref.replace_refs(doc, base_uri=path.resolve().as_uri(), loader=_loader, proxies=False, lazy_load=False)
    except jsonref.JsonRefError as err:
        where = ".".join(str(p) for p in err.path)
        raise UserError(f"{source}: {where}", f"cannot resolve $ref {err.reference.get('$ref')!r}: {err.cause}") from None
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    category = str(info.get("title") or path.stem)
    tags = {str(t["name"]): str(t.get("description") or "") for t in _list(doc.get("tags"))
            if isinstance(t, dict) and "name" in t}
    paths = doc.get("paths")
    if not isinstance(paths, dict) or not paths:
        raise UserError(f"{source}: paths", "must be a mapping of paths to operations")
    entries = []
    for route, item in paths.items():
        if not isinstance(item, dict):
            raise UserError(f"{source}: paths.{route}", "must be a mapping of methods to operations")
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            where = f"{source}: paths.{route}.{method}"
            tag = str((_list(op.get("tags")) or [DEFAULT_GROUP])[0])
            entries.append(ToolEntry(category, tag, _function(method, route, op, _list(item.get("parameters")), where),
                                     where, tags.get(tag, "")))
    if not entries:
        raise UserError(f"{source}: paths", "has no operations")
    return entries


def _loader(uri: str):
    """A referenced document: local files as YAML or JSON by their suffix, other URIs by jsonref."""
    import jsonref

    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return read_document(Path(url2pathname(parsed.path)))
    return jsonref.jsonloader(uri)


def _function(method: str, route: str, op: dict, shared: list, where: str) -> dict[str, Any]:
    params = {(p["name"], p["in"]): p for p in [*shared, *_list(op.get("parameters"))]
              if isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("in"), str)}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for (name, place), p in params.items():
        if place not in ("path", "query"):
            continue
        schema = plain(p["schema"]) if isinstance(p.get("schema"), dict) else {}
        if p.get("description") and "description" not in schema:
            schema["description"] = str(p["description"])
        properties[name] = schema
        if p.get("required") or place == "path":
            required.append(name)
    body = op.get("requestBody")
    if isinstance(body, dict) and isinstance(body.get("content"), dict):
        content = body["content"]
        media = next((m for m in content if isinstance(m, str) and (m == "application/json" or m.endswith("+json"))),
                     None)
        if media is not None:
            described = content[media] if isinstance(content[media], dict) else {}
            schema = plain(described["schema"]) if isinstance(described.get("schema"), dict) else {}
            fields = schema.get("properties")
            if schema.get("type", "object") == "object" and isinstance(fields, dict) and not set(fields) & set(properties):
                properties.update(fields)
                if body.get("required"):
                    required += [r for r in _list(schema.get("required")) if isinstance(r, str) and r in fields]
            else:
                properties["body"] = schema
                if body.get("required"):
                    required.append("body")
    text = " ".join(str(op[k]).strip() for k in ("summary", "description") if op.get(k))
    fn = {"name": str(op.get("operationId") or f"{method} {route}"), "description": text[:MAX_DESCRIPTION],
          "parameters": {"type": "object", "properties": properties}}
    if required:
        fn["parameters"]["required"] = list(dict.fromkeys(required))
    return fn


def _list(value: Any) -> list:
    """A field the spec says is a list; anything else counts as none."""
    return value if isinstance(value, list) else []


def plain(node: Any, depth: int = 0, seen: tuple = ()) -> Any:
    """A resolved schema as plain JSON: a cycle or a level past MAX_DEPTH becomes an untyped
    object; OpenAPI 3.0's `nullable` and boolean exclusive bounds become JSON Schema's."""
    if isinstance(node, list):
        return [plain(v, depth + 1, seen) for v in node]
    if not isinstance(node, dict):
        return node
    if id(node) in seen or depth > MAX_DEPTH:
        return {"type": "object"}
    seen = (*seen, id(node))
    out = {}
    for key, value in node.items():
        if key in OPENAPI_ONLY:
            continue
        if key in NAMED_SCHEMAS and isinstance(value, dict):  # names -> schemas: the names are data
            out[key] = {name: plain(v, depth + 1, seen) for name, v in value.items()}
        elif key in VALUES:
            out[key] = value
        else:
            out[key] = plain(value, depth + 1, seen)
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool):
            if out.pop(bound) and limit in out:
                out[bound] = out.pop(limit)
    return out

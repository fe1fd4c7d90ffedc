"""Type names of function docs in the wild, as JSON Schema: one table for the tool loader and the
BFCL harness. Benchmark and Python-generated docs write `float`, `int`, `dict`, `tuple`, `any`;
Java-flavoured ones `double`, `long`, `HashMap`, `ArrayList`. Standard JSON Schema names pass
unchanged; `any` means no type constraint at all."""

from __future__ import annotations

from typing import Any

ANY = None  # no "type" key: any value
TYPE_NAMES: dict[str, str | None] = {
    "float": "number", "double": "number",
    "int": "integer", "long": "integer", "short": "integer", "byte": "integer", "Bigint": "integer",
    "bool": "boolean",
    "str": "string", "String": "string", "char": "string",
    "dict": "object", "HashMap": "object", "Hashtable": "object",
    "list": "array", "tuple": "array", "ArrayList": "array", "Array": "array", "Queue": "array", "Stack": "array",
    "any": ANY, "Any": ANY,
}
JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
NESTED_ONE = ("items", "additionalProperties", "not")  # keys holding one schema
NESTED_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")  # keys holding a list of schemas


def to_json_schema(node: Any, float_note: bool = False) -> tuple[Any, int]:
    """The schema with every mapped type name replaced, and how many names were mapped. Unknown
    names stay as they are (the schema check then names them). `float_note` adds "This is a float
    type value." to a float's description, as BFCL tells function-calling models."""
    if not isinstance(node, dict):
        return node, 0
    out = dict(node)
    mapped = 0
    kind = node.get("type")
    names = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    if any(n in TYPE_NAMES for n in names if isinstance(n, str)):
        new = [TYPE_NAMES.get(n, n) if isinstance(n, str) else n for n in names]
        mapped += sum(isinstance(n, str) and n in TYPE_NAMES for n in names)
        if ANY in new:
            out.pop("type")
        else:
            out["type"] = list(dict.fromkeys(new)) if isinstance(kind, list) else new[0]
        if float_note and "float" in names:
            out["description"] = (node.get("description", "") + " This is a float type value.").strip()
    if isinstance(node.get("properties"), dict):
        out["properties"] = {}
        for name, child in node["properties"].items():
            out["properties"][name], n = to_json_schema(child, float_note)
            mapped += n
    for key in NESTED_ONE:
        if isinstance(node.get(key), dict):
            out[key], n = to_json_schema(node[key], float_note)
            mapped += n
    for key in NESTED_MANY:
        if isinstance(node.get(key), list):
            converted = [to_json_schema(child, float_note) for child in node[key]]
            out[key] = [c for c, _ in converted]
            mapped += sum(n for _, n in converted)
    return out, mapped

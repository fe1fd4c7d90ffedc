"""Turn BFCL's possible answers into policy output: one tool-call block per expected call."""

from __future__ import annotations

import ast

from trustee_lite.env.toolcalls import format_call

OMIT = object()


def choose(possible: list):
    """The first possible value; "" in BFCL's lists means "may be left out"."""
    for value in possible:
        if value != "":
            return realize(value)
    return OMIT


def realize(value):
    """A concrete value: dicts inside answers hold lists of possible values per key."""
    if isinstance(value, dict):
        out = {}
        for key, possible in value.items():
            picked = choose(possible) if isinstance(possible, list) else possible
            if picked is not OMIT:
                out[key] = picked
        return out
    if isinstance(value, list):
        return [realize(v) if isinstance(v, dict) else v for v in value]
    return value


def answer_calls(answer, functions) -> list[tuple[str, dict]]:
    """Each expected call with one possible value per parameter; a parameter that may be left
    out (and is not required) is left out."""
    required = {f["name"]: set(f["parameters"].get("required", ())) for f in functions}
    calls = []
    for entry in answer:
        (name, params), = entry.items()
        args = {}
        for param, possible in params.items():
            if "" in possible and param not in required.get(name, ()):
                continue
            picked = choose(possible)
            if picked is not OMIT:
                args[param] = picked
        calls.append((name, args))
    return calls


def answer_text(item) -> str:
    return "\n".join(format_call(name, args) for name, args in answer_calls(item.answer, item.functions))


def ground_truth_call(text: str, functions) -> tuple[str, dict]:
    """A multi-turn ground-truth call string, e.g. ``sort('final_report.pdf')``, as a name and
    keyword arguments (positional ones named from the function doc's parameter order)."""
    node = ast.parse(text, mode="eval").body
    name = node.func.id
    params = list(next(f for f in functions if f["name"] == name)["parameters"]["properties"])
    args = {params[i]: ast.literal_eval(value) for i, value in enumerate(node.args)}
    args.update({k.arg: ast.literal_eval(k.value) for k in node.keywords})
    return name, args


def scripted_multi_turn(item, change=None):
    """The policy of a test: each turn, the ground truth's calls in one message (`change` may
    corrupt them), then a plain answer once the tool results are in."""
    async def reply(messages):
        if messages[-1]["role"] == "tool":
            return "Done."
        turn = sum(m["role"] == "user" for m in messages) - 1
        calls = [ground_truth_call(c, item.functions) for c in item.answer[turn]]
        if change is not None:
            calls = change(turn, calls)
        return "\n".join(format_call(name, args) for name, args in calls) or "There is nothing to do."
    return reply

"""BFCL v4 through its own package: the data and the checker come from ``bfcl-eval``.

What is ours: turning BFCL function docs into the policy's tool schemas, and turning a policy
turn (parsed by the rollout's own parser) into the ``[{name: arguments}]`` list BFCL's AST
checker takes. The verdict is ``bfcl_eval``'s ``ast_checker``, imported, not re-implemented;
the relevance rule (a call made or not) is the one its runner applies. Multi-turn categories:
the conversation loop is ours (``play_multi_turn``); the API classes, the execution of calls
and the verdict (``multi_turn_checker``) are BFCL's.

``bfcl-eval`` pins numpy and pulls a dozen vendor SDKs (and, through sentence-transformers, the
CUDA build of torch), so it is installed with ``--no-deps``: the checker itself needs only the
standard library. One module of the checker's import chain is the registry of every model
BFCL knows (``bfcl_eval.constants.model_config``), which imports all those SDKs; the checker
reads one flag from it (``underscore_to_dot``, for APIs that cannot have dots in names). We
register that module with the one entry the checker asks for, our policy's, before importing
the checker: the policy gets function names exactly as BFCL writes them, dots included.
"""

from __future__ import annotations

import itertools
import json
import sys
import types
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from trustee_lite.env.pool.schema_types import to_json_schema
from trustee_lite.env.toolcalls import ToolCall, parse_turn
from trustee_lite.errors import UserError

INSTALL = "pip install --no-deps bfcl-eval==2026.3.23"
CHECKER_MODEL = "trustee-lite"  # the name the checker is told (no "_": it reads those as "/")

# Categories scored by the AST checker (python) or by the relevance rule.
AST_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple",
                  "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
RELEVANCE_CATEGORIES = ("irrelevance", "live_irrelevance", "live_relevance")
# Played against BFCL's executable API classes, in-process, and scored by its multi-turn checker.
MULTI_TURN_CATEGORIES = ("multi_turn_base", "multi_turn_miss_param", "multi_turn_long_context")
CATEGORIES = AST_CATEGORIES + RELEVANCE_CATEGORIES + MULTI_TURN_CATEGORIES

# Error kinds in the tables; the checker's own error_type is kept with every item.
KINDS = ("parse_failure", "wrong_function", "wrong_arguments", "irrelevance_miss", "no_call", "wrong_outcome",
         "step_limit", "policy_error")


@dataclass(frozen=True)
class Item:
    id: str
    messages: tuple[dict[str, str], ...]  # the question's (single) turn
    functions: tuple[dict, ...]  # BFCL function docs, as the checker takes them
    answer: tuple[dict, ...] | None  # possible answers; None for relevance categories

    @property
    def tools(self) -> list[dict]:
        return [to_tool(f) for f in self.functions]


@dataclass(frozen=True)
class Outcome:
    valid: bool
    kind: str | None  # one of KINDS; None when valid
    error_type: str | None  # BFCL's error_type (or ours for a policy error)
    detail: str = ""


def _bfcl(place: str = "--bfcl"):
    """The bfcl_eval package, or one line (naming `place`) saying how to install it."""
    try:
        import bfcl_eval  # noqa: F401
    except ImportError:
        raise UserError(place, f"needs the bfcl-eval package ({INSTALL})") from None
    name = "bfcl_eval.constants.model_config"
    if name not in sys.modules:  # see the module docstring: the checker's one registry lookup
        registry = types.ModuleType(name)
        registry.MODEL_CONFIG_MAPPING = {}
        sys.modules[name] = registry
    sys.modules[name].MODEL_CONFIG_MAPPING.setdefault(CHECKER_MODEL, types.SimpleNamespace(underscore_to_dot=False))
    return bfcl_eval


def require(place: str) -> None:
    """Refuse a command that needs bfcl-eval when it is not installed (one line, exit 2)."""
    _bfcl(place)


@lru_cache(maxsize=None)
def _checker():
    _bfcl()
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    return ast_checker, Language.PYTHON


def check_categories(names: list[str], place: str = "--bfcl") -> list[str]:
    """Validate category names ("all" means every supported one); keep their order, once each."""
    chosen: list[str] = []
    for name in names:
        for one in (CATEGORIES if name == "all" else (name,)):
            if one not in CATEGORIES:
                raise UserError(place, f"unknown or unsupported BFCL category {one!r} (supported: {', '.join(CATEGORIES)}, all)")
            if one not in chosen:
                chosen.append(one)
    return chosen


@dataclass(frozen=True)
class MultiTurnItem:
    id: str
    turns: tuple[tuple[dict[str, str], ...], ...]  # the user's messages, turn by turn
    functions: tuple[dict, ...]  # the docs of every method of the involved classes
    answer: tuple[tuple[str, ...], ...]  # ground-truth calls per turn, as Python call strings
    entry: dict  # what the checker reads: id, initial_config, involved_classes

    @property
    def tools(self) -> list[dict]:
        return [to_tool(f) for f in self.functions]


def load(category: str, limit: int | None = None) -> list[Item] | list[MultiTurnItem]:
    """The first `limit` questions of a category (all if None), with their possible answers."""
    _bfcl()
    from bfcl_eval.constants.eval_config import POSSIBLE_ANSWER_PATH, PROMPT_PATH

    file = f"BFCL_v4_{category}.json"
    questions = _read_lines(PROMPT_PATH / file, limit)
    answers = None
    if category not in RELEVANCE_CATEGORIES:
        answers = {a["id"]: a["ground_truth"] for a in _read_lines(POSSIBLE_ANSWER_PATH / file, None)}
    if category in MULTI_TURN_CATEGORIES:
        return [_multi_turn_item(q, answers[q["id"]]) for q in questions]
    items = []
    for q in questions:
        turns = q["question"]
        if len(turns) != 1:
            raise ValueError(f"{file}: {q['id']} has {len(turns)} turns; single-turn categories have one")
        answer = None if answers is None else tuple(answers[q["id"]])
        items.append(Item(q["id"], tuple(turns[0]), tuple(q["function"]), answer))
    return items


def _multi_turn_item(q: dict, answer: list[list[str]]) -> MultiTurnItem:
    from bfcl_eval.constants.eval_config import MULTI_TURN_FUNC_DOC_PATH
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    functions = []
    for name in q["involved_classes"]:
        functions += _read_lines(MULTI_TURN_FUNC_DOC_PATH / MULTI_TURN_FUNC_DOC_FILE_MAPPING[name], None)
    entry = {"id": q["id"], "initial_config": q["initial_config"], "involved_classes": q["involved_classes"]}
    return MultiTurnItem(q["id"], tuple(tuple(turn) for turn in q["question"]), tuple(functions),
                         tuple(tuple(calls) for calls in answer), entry)


def _read_lines(path, limit: int | None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
                if limit is not None and len(rows) >= limit:
                    break
    return rows


def to_tool(function: dict) -> dict:
    """A BFCL function doc as an OpenAI-style tool: BFCL's type names mapped by its own table."""
    params = json_schema(function.get("parameters") or {"type": "dict", "properties": {}})
    return {"type": "function", "function": {
        "name": function["name"], "description": function.get("description", ""), "parameters": params}}


def json_schema(node: Any) -> Any:
    """A BFCL parameter or response doc as JSON Schema (type names by env/pool/schema_types.py's table;
    a float's description says so, as BFCL tells function-calling models)."""
    return to_json_schema(node, float_note=True)[0]


def system_text(item: Item) -> str:
    """The question's own system messages, if any (live categories have some)."""
    return "\n\n".join(m["content"] for m in item.messages if m["role"] == "system")


def conversation(item: Item) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in item.messages if m["role"] != "system"]


def score(category: str, item: Item, text: str) -> Outcome:
    """Judge one policy turn: BFCL's relevance rule or its AST checker, with an error kind."""
    turn = parse_turn(text)
    calls = [c for c in turn.calls if not c.malformed]
    if category in RELEVANCE_CATEGORIES:
        made_call = bool(calls)  # BFCL: the output decodes to a non-empty list of calls
        if "irrelevance" in category:
            return Outcome(True, None, None) if not made_call else Outcome(
                False, "irrelevance_miss", "irrelevance_error:decoder_success", _names(calls))
        return Outcome(True, None, None) if made_call else Outcome(False, "no_call", "relevance_error:decoder_failed")
    broken = [c for c in turn.calls if c.malformed]
    if broken or not calls:
        detail = broken[0].error if broken else "no tool call in the output"
        return Outcome(False, "parse_failure", "ast_decoder:decoder_failed", detail)
    ast_checker, python = _checker()
    output = [{c.name: c.arguments} for c in calls]
    result = ast_checker(list(item.functions), output, list(item.answer), python, category, CHECKER_MODEL)
    if result["valid"]:
        return Outcome(True, None, None)
    expected = Counter(name for answer in item.answer for name in answer)
    kind = "wrong_function" if Counter(c.name for c in calls) != expected else "wrong_arguments"
    return Outcome(False, kind, result.get("error_type"), "; ".join(map(str, result.get("error", []))))


def _names(calls) -> str:
    return "called " + ", ".join(c.name for c in calls)


# -- multi-turn: BFCL's API classes driven in-process ------------------------------------------
_sessions = itertools.count(1)


def call_text(call: ToolCall) -> str:
    """A parsed call as the Python call string BFCL executes: ``cd(folder='document')``."""
    return f"{call.name}(" + ", ".join(f"{key}={value!r}" for key, value in call.arguments.items()) + ")"


async def play_multi_turn(item: MultiTurnItem, reply, step_limit: int | None = None) -> tuple[list, list[str]]:
    """Play one multi-turn question. `reply(messages)` is the policy (a coroutine returning its
    text). Each user turn runs until the policy answers without a tool call, or for at most
    BFCL's step limit; every call runs on this item's own instances of BFCL's API classes.
    Returns the calls per turn and step (as the checker takes them) and the policy's texts."""
    _bfcl()
    from bfcl_eval.constants.default_prompts import MAXIMUM_STEP_LIMIT

    limit = MAXIMUM_STEP_LIMIT if step_limit is None else step_limit
    session = new_session()  # BFCL keeps instances per name and item: a fresh name
    messages: list[dict] = []
    decoded: list[list[list[str]]] = []
    texts: list[str] = []
    for turn in item.turns:
        messages += [{"role": m["role"], "content": m["content"]} for m in turn]
        steps: list[list[str]] = []
        for _ in range(limit):
            text = await reply(messages)
            texts.append(text)
            messages.append({"role": "assistant", "content": text})
            calls = [c for c in parse_turn(text).calls if not c.malformed]
            if not calls:
                break
            strings = [call_text(c) for c in calls]
            results = execute(item, strings, session)
            steps.append(strings)
            messages += [{"role": "tool", "name": c.name, "content": r} for c, r in zip(calls, results)]
        else:
            decoded.append(steps)
            return decoded, texts  # forced to stop, as BFCL's runner does: fewer turns than asked
        decoded.append(steps)
    return decoded, texts


def execute(item: MultiTurnItem, calls: list[str], session: str) -> list[str]:
    """Run Python call strings on the item's instances of BFCL's API classes (one set of
    instances per session name, created from the item's initial state); their results."""
    _bfcl()
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call

    results, _ = execute_multi_turn_func_call(calls, item.entry["initial_config"], item.entry["involved_classes"],
                                              session, item.id, long_context="long_context" in item.id)
    return results


def new_session() -> str:
    """A session name never used before: fresh instances of the API classes."""
    return f"{CHECKER_MODEL}-{next(_sessions)}"


def score_multi_turn(item: MultiTurnItem, decoded: list) -> Outcome:
    """BFCL's multi-turn checker: after every turn, the API instances' state and the calls'
    results must match those of the ground truth."""
    _bfcl()
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    if len(decoded) != len(item.answer):
        return Outcome(False, "step_limit", "multi_turn:force_terminated",
                       f"stopped after {len(decoded)} of {len(item.answer)} turns (step limit)")
    session = new_session()
    result = multi_turn_checker(decoded, [list(a) for a in item.answer], dict(item.entry), item.id.rsplit("_", 1)[0], session)
    if result["valid"]:
        return Outcome(True, None, None)
    kind = "no_call" if result["error_type"] == "multi_turn:empty_turn_model_response" else "wrong_outcome"
    return Outcome(False, kind, result["error_type"], str(result.get("error_message", "")))

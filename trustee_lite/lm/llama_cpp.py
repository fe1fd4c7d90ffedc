"""The llama.cpp backend: GGUF models through llama-cpp-python, JSON schema enforced by a grammar."""

from __future__ import annotations

import json
import logging
import os

from trustee_lite.config import ModelConfig, SimulatorConfig
from trustee_lite.errors import UserError
from trustee_lite.lm.base import Backend, Completion, ContextLimit, GenerationError, GenRequest
from trustee_lite.lm.models import locate

log = logging.getLogger(__name__)


GRAMMAR_MAX_LENGTH = 1000  # longest string bound the grammar keeps (see grammar_schema)


class LlamaCppBackend(Backend):
    name = "llama_cpp"
    max_batch = 1  # llama-cpp-python runs one sequence at a time

    def __init__(self, cfg: ModelConfig, place: str):
        from llama_cpp import Llama, llama_supports_gpu_offload

        self.location = locate(cfg)
        self.model_id = self.location.model_id
        if self.location.gguf_path is None or not self.location.gguf_path.is_file():
            raise UserError(f"{place}.model", f"llama_cpp needs a .gguf file, got {cfg.model!r}")
        offload = cfg.device in ("auto", "cuda", "mps") and llama_supports_gpu_offload()
        sim = cfg if isinstance(cfg, SimulatorConfig) else SimulatorConfig()
        threads = sim.threads or os.cpu_count() or 1  # llama-cpp-python's default is half the cores
        self.reuse_prefix = sim.reuse_prefix
        try:
            self.llm = Llama(
                model_path=str(self.location.gguf_path),
                n_ctx=sim.n_ctx, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=-1 if offload else 0,
                seed=0,
                verbose=False,
            )
        except ValueError as err:
            raise UserError(f"{place}.model", f"llama.cpp cannot load {self.location.gguf_path}: {err}") from None
        self._grammars: dict[str, object] = {}

    def _grammar(self, schema: dict | None):
        if schema is None:
            return None
        from llama_cpp import LlamaGrammar
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        text = json.dumps(schema)
        if text not in self._grammars:
            # Keep the schema's own field order (the converter would sort names): roles put
            # their reasoning before their verdict.
            order = list(schema.get("properties", {}))
            gbnf = json_schema_to_gbnf(json.dumps(grammar_schema(schema)), order)
            # The converter lets raw control characters into strings, which JSON forbids
            # (a raw newline in a string made answers unparseable): escapes only.
            gbnf = gbnf.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')
            self._grammars[text] = LlamaGrammar.from_string(gbnf, verbose=False)
        return self._grammars[text]

    def generate_batch(self, requests: list[GenRequest]) -> list[Completion | GenerationError]:
        return [self._one(r) for r in requests]

    def _one(self, req: GenRequest) -> Completion | GenerationError:
        s = req.sampling
        common = dict(
            max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
            frequency_penalty=s.frequency_penalty, seed=s.seed & 0xFFFF_FFFF, grammar=self._grammar(req.json_schema),
        )
        if not self.reuse_prefix:
            # Evaluate every prompt from scratch: a reused prefix changes the logits slightly, and
            # the answer would depend on the previous call instead of only on prompt and seed.
            self.llm.reset()
        try:
            if req.messages is not None:
                out = self.llm.create_chat_completion(messages=list(req.messages), **common)
                text = out["choices"][0]["message"]["content"] or ""
            else:
                out = self.llm.create_completion(prompt=list(req.prompt_ids), **common)
                text = out["choices"][0]["text"]
        except (ValueError, RuntimeError) as err:  # context overflow, decode failure
            kind = ContextLimit if "exceed context window" in str(err) else GenerationError
            return kind(f"llama.cpp: {err}")
        usage = out["usage"]
        return Completion(
            text=text, num_tokens=usage["completion_tokens"], prompt_tokens=usage["prompt_tokens"],
            finish_reason="length" if out["choices"][0]["finish_reason"] == "length" else "stop",
        )

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()


def grammar_schema(schema):
    """The schema as the grammar enforces it. The converter unrolls a string's maxLength into one
    nested rule per character, and llama.cpp rejects a grammar past about 1000 of them (then
    crashes), so longer bounds are tightened to GRAMMAR_MAX_LENGTH: still valid by the schema."""
    if isinstance(schema, dict):
        out = {k: grammar_schema(v) for k, v in schema.items()}
        if isinstance(out.get("maxLength"), int) and out["maxLength"] > GRAMMAR_MAX_LENGTH:
            out["maxLength"] = GRAMMAR_MAX_LENGTH
        return out
    if isinstance(schema, list):
        return [grammar_schema(v) for v in schema]
    return schema

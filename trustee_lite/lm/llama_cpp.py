"""The llama.cpp backend: GGUF models through llama-cpp-python, JSON schema enforced by a grammar.

As the simulator it answers chat messages. As the policy (eval and simulate of an exported
policy: a GGUF base with the GGUF LoRA `export --to gguf-lora` wrote) it continues exact prompt
ids token by token, stopping at the end-of-turn ids of the transformers tokenizer read from the
same GGUF file, so a turn's ids and text are what the transformers backend would give."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from trustee_lite.config import ModelConfig, PolicyConfig, SimulatorConfig
from trustee_lite.config.models import gguf_lora
from trustee_lite.errors import UserError
from trustee_lite.lm.base import Backend, Completion, ContextLimit, GenerationError, GenRequest
from trustee_lite.lm.models import locate

log = logging.getLogger(__name__)


GRAMMAR_MAX_LENGTH = 1000  # longest string bound the grammar keeps (see grammar_schema)
POLICY_N_CTX = 8192  # the policy's context window (a simulator's is its n_ctx)


class LlamaCppBackend(Backend):
    name = "llama_cpp"
    max_batch = 1  # llama-cpp-python runs one sequence at a time

    def __init__(self, cfg: ModelConfig, place: str, adapter: str | None = None, **_training):
        from llama_cpp import Llama, llama_supports_gpu_offload, llama_vocab_is_eog

        self.location = locate(cfg)
        self.model_id = self.location.model_id
        if self.location.gguf_path is None or not self.location.gguf_path.is_file():
            hint = " (serve the policy's base as a GGUF file: --set policy.model=BASE.gguf)" if isinstance(cfg, PolicyConfig) else ""
            raise UserError(f"{place}.model", f"llama_cpp needs a .gguf file, got {cfg.model!r}{hint}")
        offload = cfg.device in ("auto", "cuda", "mps") and llama_supports_gpu_offload()
        sim = cfg if isinstance(cfg, SimulatorConfig) else SimulatorConfig()
        threads = sim.threads or os.cpu_count() or 1  # llama-cpp-python's default is half the cores
        self.reuse_prefix = sim.reuse_prefix
        lora = gguf_lora(Path(adapter)) if adapter is not None else None
        if lora is not None:
            self.model_id += f"+{lora.name}:{lora.stat().st_size}"
        self.n_ctx = POLICY_N_CTX if isinstance(cfg, PolicyConfig) else sim.n_ctx
        try:
            self.llm = Llama(
                model_path=str(self.location.gguf_path),
                n_ctx=self.n_ctx, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=-1 if offload else 0,
                seed=0, lora_path=str(lora) if lora is not None else None,
                verbose=False,
            )
        except (ValueError, RuntimeError) as err:  # RuntimeError: a LoRA that does not fit the base
            what = f"{self.location.gguf_path} with the LoRA {lora}" if lora is not None else str(self.location.gguf_path)
            raise UserError(f"{place}.model", f"llama.cpp cannot load {what}: {err}") from None
        self._grammars: dict[str, object] = {}
        self._is_eog = llama_vocab_is_eog
        self.tokenizer, self.eos_ids = None, set()
        if isinstance(cfg, PolicyConfig):  # the policy's chat template and end-of-turn ids, from the same file
            from trustee_lite.lm import hf_load

            self.tokenizer = hf_load.tokenizer_of(cfg, f"{place}.model")
            self.eos_ids = set(hf_load.eos_ids(self.tokenizer, None))

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
            if req.messages is None:
                return self._continue(req)
            out = self.llm.create_chat_completion(messages=list(req.messages), **common)
            text = out["choices"][0]["message"]["content"] or ""
        except (ValueError, RuntimeError) as err:  # context overflow, decode failure
            kind = ContextLimit if "exceed context window" in str(err) else GenerationError
            return kind(f"llama.cpp: {err}")
        usage = out["usage"]
        return Completion(
            text=text, num_tokens=usage["completion_tokens"], prompt_tokens=usage["prompt_tokens"],
            finish_reason="length" if out["choices"][0]["finish_reason"] == "length" else "stop",
        )

    def _continue(self, req: GenRequest) -> Completion | GenerationError:
        """Continue exact prompt ids: the generated ids up to and including an end-of-turn id,
        their text decoded by the policy's tokenizer as the transformers backend decodes it."""
        s, prompt = req.sampling, list(req.prompt_ids)
        if len(prompt) >= self.n_ctx:
            return ContextLimit(f"llama.cpp: the prompt's {len(prompt)} tokens exceed the context window ({self.n_ctx})")
        self.llm.set_seed(s.seed & 0xFFFF_FFFF)
        tokens, stopped = [], False
        for tok in self.llm.generate(prompt, temp=s.temperature, top_p=s.top_p, top_k=0, min_p=0.0,
                                     frequency_penalty=s.frequency_penalty, grammar=self._grammar(req.json_schema)):
            tokens.append(int(tok))
            stopped = tok in self.eos_ids or bool(self._is_eog(self.llm._model.vocab, tok))
            if stopped or len(tokens) >= s.max_new_tokens or len(prompt) + len(tokens) >= self.n_ctx:
                break
        text_ids = tokens[:-1] if stopped else tokens
        text = (self.tokenizer.decode(text_ids, skip_special_tokens=False) if self.tokenizer is not None
                else self.llm.detokenize(text_ids).decode("utf-8", errors="replace"))
        return Completion(text=text, num_tokens=len(tokens), prompt_tokens=len(prompt),
                          finish_reason="stop" if stopped else "length", token_ids=tuple(tokens), ended_with_eos=stopped)

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

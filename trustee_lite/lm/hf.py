"""The transformers backend: any causal LM (a GGUF file too), batched, with per-token log-probs,
key/value reuse across a policy's turns, and an optional PEFT LoRA adapter that one call can
switch off. Loading is in hf_load.py, per-row sampling in sampler.py, the trainable adapter in
lora.py."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

from trustee_lite.config import ModelConfig
from trustee_lite.lm import hf_load, quant, static_cache
from trustee_lite.lm.base import (
    Backend,
    BatchTimes,
    Completion,
    ContextLimit,
    GenerationError,
    GenRequest,
    Sampling,
    template_kwargs,
)
from trustee_lite.lm.gpu_monitor import GpuMonitor, nvml_available
from trustee_lite.lm.hf_load import first_line
from trustee_lite.lm.lora import attach_lora
from trustee_lite.lm.prefix_cache import PrefixCache, Reuse, batch_cache, row_kv
from trustee_lite.lm.sampler import RowSampler

log = logging.getLogger(__name__)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, cfg: ModelConfig, place: str, adapter: str | None = None, lora=None, seed: int = 0,
                 gradient_checkpointing: bool = False):
        """`lora` (the policy's LoRA settings) lets a 4-bit policy load through Unsloth, adapter
        included, when Unsloth is installed; otherwise the learner adds the adapter with PEFT."""
        import torch

        loaded = hf_load.load(cfg, place, lora, adapter, seed, gradient_checkpointing)
        model = self.model = loaded.model
        self.tokenizer, self.device, self.model_id = loaded.tokenizer, loaded.device, loaded.model_id
        self.unsloth = loaded.unsloth
        self.max_batch = cfg.batch_size
        self.times = BatchTimes()  # the last generate_batch call's
        budget = getattr(cfg, "kv_reuse_mb", 0) * 2**20
        self.prefix_cache = PrefixCache(budget) if budget and hf_load.reusable_cache(model, self.unsloth) else None
        self._cache_argument = hf_load.cache_argument(model)  # the name generate() takes a cache under
        if adapter is not None:
            self.load_adapter(adapter)
        self.eos_ids = hf_load.eos_ids(self.tokenizer, model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        # Sampling must equal training: the row sampler alone decides every token, so no logits
        # processor may come from the model's own generation config (Qwen3's top_k, a
        # repetition penalty, ...) that the learner's log-probs would not apply.
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # Unsloth: a PEFT model
        inner.generation_config = hf_load.neutral_generation_config(inner, self.eos_ids, self.pad_id)
        self.context_window = hf_load.context_window(model, quant.UNSLOTH_MAX_SEQ_LENGTH if self.unsloth else None)
        self._schemas = None  # xgrammar's compiler, made on the first JSON-schema request
        self.static = self._static_caches(cfg)  # compiled decoding (static_cache.py), or None: eager
        self._mixed = getattr(cfg, "mixed_batches", False) and not self.unsloth  # Unsloth's LoRA: one state a batch
        self._compiled: set[tuple] = set()  # (rows, slots, adapter on) shapes decoded so far
        torch.manual_seed(0)

    def _static_caches(self, cfg: ModelConfig):
        compiled = cfg.decode == "compiled" or (cfg.decode == "auto" and self.device == "cuda")
        if not compiled:
            return None
        if self.unsloth:
            log.info("transformers: Unsloth decodes its own way; decode: compiled applies without Unsloth")
            return None
        tokens = min(cfg.static_cache_tokens, self.context_window or cfg.static_cache_tokens)
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        caches = static_cache.StaticCaches(inner.config, tokens, cfg.batch_size)
        static_cache.allow_recompiles(2 * len(caches.sizes) * len(caches.lengths) + 2)  # adapter on and off
        return caches

    @property
    def compiled_decode(self) -> bool:
        return self.static is not None

    @property
    def mixed_adapters(self) -> bool:
        return self._mixed and self.has_adapter

    @classmethod
    def check_runnable(cls, cfg: ModelConfig, place: str) -> None:
        if cfg.load_in_4bit:
            quant.require_cuda(place)

    @property
    def selective_logits(self) -> bool:
        return not self.unsloth  # Unsloth's forward takes no position list

    def gpu_monitor(self):
        if self.device != "cuda" or not nvml_available():
            return None
        import torch

        return GpuMonitor(torch.cuda.current_device())

    def load_adapter(self, path: str) -> None:
        """Put a PEFT LoRA adapter (standard layout) on the model; requests then choose on or off."""
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():  # transformers' deprecation notes from inside PEFT's loader
            warnings.simplefilter("ignore", FutureWarning)
            self.model = PeftModel.from_pretrained(self.model, path, is_trainable=False).eval()
        self.weights_changed()

    def attach_lora(self, lora, gradient_checkpointing: bool):
        """Put a trainable LoRA adapter on the model this backend serves (keep training the
        recipe's starting adapter, or Unsloth's, when there is one) and return the model."""
        self.model = attach_lora(self.model, lora, gradient_checkpointing and not self.unsloth)
        self.weights_changed()
        return self.model

    def set_mode(self, training: bool) -> None:
        """Before and after a training update: Unsloth switches between its two paths, and the
        kept keys and values go (the weights are about to change)."""
        if self.unsloth:
            quant.unsloth_mode(self.model, training)
        if training:
            self.weights_changed()

    def weights_changed(self) -> None:
        """The adapter's weights change (an update, a loaded checkpoint): cached keys and values
        of earlier turns no longer match the policy."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    def batch_key(self, request: GenRequest) -> tuple:
        # Temperature, top-p, seeds and lengths are per row; only the weights must agree, unless
        # rows choose their adapter (PEFT's adapter_names).
        return () if self.mixed_adapters else (request.adapter and self.has_adapter,)

    def encode_messages(self, messages, thinking: bool | None = None) -> list[int]:
        kwargs = template_kwargs(self.tokenizer.chat_template or "", thinking)
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True, **kwargs)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prepare(self, request: GenRequest) -> list[int] | GenerationError:
        """A request's prompt ids, or why it cannot run: its template fails, or its prompt and
        new tokens do not fit the context window. Checked per row, before batching."""
        try:
            prompt = list(request.prompt_ids) if request.prompt_ids is not None else self.encode_messages(
                request.messages, request.thinking)
        except Exception as err:  # noqa: BLE001 - jinja2 errors, a template's raise_exception()
            return GenerationError(f"transformers: the chat template cannot render this request: {first_line(err)}")
        need = len(prompt) + request.sampling.max_new_tokens
        if self.context_window is not None and need > self.context_window:
            return ContextLimit(f"prompt of {len(prompt)} tokens + {request.sampling.max_new_tokens} new tokens "
                                f"exceeds the context window of {self.context_window}")
        return prompt

    def generate_batch(self, requests: list[GenRequest]) -> list[Completion | GenerationError]:
        """Each row fails alone: rows that cannot run are answered with their error, the rest are
        batched; if the batch itself fails, its rows are retried one at a time."""
        self.times = BatchTimes()
        results: list = [self.prepare(r) for r in requests]
        rows = [i for i, r in enumerate(results) if not isinstance(r, GenerationError)]
        if not rows:
            return results
        try:
            done = self._generate([requests[i] for i in rows], [results[i] for i in rows])
        except Exception as err:  # noqa: BLE001 - out of memory, a kernel error, ...
            if len(rows) == 1:
                done = [GenerationError(f"transformers: {first_line(err)}")]
            else:
                log.warning("a batch of %d failed (%s); running its rows one at a time", len(rows), first_line(err))
                done = [self.generate_batch([requests[i]])[0] for i in rows]
        for i, completion in zip(rows, done):
            results[i] = completion
        return results

    def _generate(self, requests: list[GenRequest], prompts: list[list[int]]) -> list[Completion]:
        real = len(requests)
        width = max(len(p) for p in prompts)
        static = self.static
        if static is not None and width + max(r.sampling.max_new_tokens for r in requests) > static.tokens:
            static = None  # longer than the static caches' rows: this batch decodes eager
        if static is not None and self._mixed_rows(requests):
            static = None  # rows with and without the adapter: each pattern would compile anew
        if static is not None:  # fill the bucket with rows that end at their first token
            bucket = static_cache.bucket_for(real, static.sizes)
            filler = replace(requests[0], sampling=Sampling(0), json_schema=None, logprobs=False)
            requests, prompts = requests + [filler] * (bucket - real), prompts + [prompts[0]] * (bucket - real)
        try:
            return self._decode(requests, prompts, width, static, real)
        except Exception as err:
            import torch

            if static is None or isinstance(err, torch.OutOfMemoryError):
                raise
            log.warning("transformers: compiled decoding failed (%s); decoding eager from now on", first_line(err))
            self.static = None
            return self._decode(requests[:real], prompts[:real], width, None, real)

    def _decode(self, requests, prompts, width: int, static, real: int) -> list[Completion]:
        """One batched generate, eager or (`static`: the caches) compiled; the first `real` rows'
        completions (the rest fill a bucket)."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every row ends where generation starts
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        reuses = self._reuses(requests, prompts)
        cached = width - max(len(p) - r.tokens for p, r in zip(prompts, reuses))  # slots no row must feed: the cache
        reuses = [Reuse(r.kv, max(0, min(r.tokens, len(p) - (width - cached)))) for p, r in zip(prompts, reuses)]
        sampler = RowSampler([r.sampling for r in requests], self.eos_ids, width, self._constraints(requests), self._schemas)
        config = GenerationConfig(
            max_new_tokens=max(r.sampling.max_new_tokens for r in requests), do_sample=False, num_beams=1,
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
            compile_config=static_cache.compile_config(self.device) if static is not None else None,
        )
        per_row = self._mixed_rows(requests)  # each row names its adapter
        switch_off = not requests[0].adapter and self.has_adapter and not per_row
        adapters = {"adapter_names": [self.model.active_adapter if r.adapter else "__base__" for r in requests]
                    } if per_row else {}
        start = time.perf_counter()
        with torch.inference_mode(), (self.model.disable_adapter() if switch_off else contextlib.nullcontext()):
            cache = None
            if static is not None:
                bucket, cache = static.take(len(requests), width + config.max_new_tokens)
                shape = (*bucket, not switch_off)
                if cached:
                    batch_cache(reuses, cached, lambda: cache)
            elif self.prefix_cache is not None and any(_reusing(r) for r in requests):
                from transformers import DynamicCache

                cache = batch_cache(reuses, cached, DynamicCache) if cached else DynamicCache()
            with static_cache.quantised_compile(self.model) if static is not None else contextlib.nullcontext():
                out = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                    generation_config=config, logits_processor=LogitsProcessorList([sampler]),
                    **adapters, **({self._cache_argument: cache} if cache is not None else {}),
                )
        end = time.perf_counter()
        first = sampler.first_logits_at or end
        self.times.prefill_s += first - start
        self.times.decode_s += end - first
        if static is not None and shape not in self._compiled:  # a new shape: compiled, or its CUDA graph recorded
            self._compiled.add(shape)
            self.times.compile_s += end - first
        policy = [(p, r) for p, r, q in zip(prompts, reuses, requests) if q.adapter]  # the figures are the policy's
        self.times.reused_tokens += sum(r.tokens for _, r in policy)
        self.times.fed_tokens += sum(len(p) - r.tokens for p, r in policy)
        new = out[:, width:].tolist()
        done = [self._completion(row, req, prompts[row], new[row], sampler) for row, req in enumerate(requests[:real])]
        if cache is not None and self.prefix_cache is not None:
            self._keep(cache, requests[:real], prompts, done, width)
        return done

    def _mixed_rows(self, requests: list[GenRequest]) -> bool:
        """Rows that want the adapter beside rows that do not (a model without one: no matter)."""
        return self.has_adapter and len({r.adapter for r in requests}) > 1

    def _reuses(self, requests: list[GenRequest], prompts: list[list[int]]) -> list[Reuse]:
        """What each row takes from the prefix cache (policy turns only)."""
        if self.prefix_cache is None:
            return [Reuse() for _ in prompts]
        return [self.prefix_cache.lookup(tuple(p)) if _reusing(r) else Reuse() for r, p in zip(requests, prompts)]

    def _keep(self, cache, requests, prompts, done, width: int) -> None:
        """Store each policy row's keys and values (its prompt and the tokens it generated, but
        the last one, which was never fed) for its next turn."""
        import torch

        for row, (request, prompt, completion) in enumerate(zip(requests, prompts, done)):
            if _reusing(request) and completion.token_ids:
                slots = torch.arange(width - len(prompt), width + len(completion.token_ids) - 1, device=self.device)
                self.prefix_cache.store(tuple(prompt) + tuple(completion.token_ids[:-1]), row_kv(cache, row, slots))

    def _constraints(self, requests: list[GenRequest]) -> list:
        """Each row's JSON-schema constraint (xgrammar), or None for free text."""
        if not any(r.json_schema for r in requests):
            return [None] * len(requests)
        if self._schemas is None:
            from trustee_lite.lm.constrain import SchemaCompiler

            vocab = self.model.get_output_embeddings().weight.shape[0]
            self._schemas = SchemaCompiler(self.tokenizer, vocab, self.eos_ids)
        return [self._schemas.constraint(r.json_schema, r.thinking, r.sampling.max_new_tokens) if r.json_schema else None
                for r in requests]

    def _completion(self, row, req, prompt, generated, sampler) -> Completion:
        tokens, stopped = [], False
        for tok in generated[: req.sampling.max_new_tokens]:
            tokens.append(tok)
            if tok in self.eos_ids:
                stopped = True
                break
        text_ids = tokens[:-1] if stopped else tokens
        return Completion(
            text=self.tokenizer.decode(text_ids, skip_special_tokens=False),
            num_tokens=len(tokens), prompt_tokens=len(prompt),
            finish_reason="stop" if stopped else "length",
            token_ids=tuple(tokens), ended_with_eos=stopped,
            logprobs=tuple(sampler.logprobs[row][: len(tokens)]) if req.logprobs else None,
        )

    def close(self) -> None:
        self.model = None


def _reusing(request: GenRequest) -> bool:
    """Policy turns (exact prompt ids, adapter on) reuse earlier turns' keys and values."""
    return request.prompt_ids is not None and request.adapter

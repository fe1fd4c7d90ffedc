"""The transformers backend: any causal LM (a GGUF file too), batched, with per-token log-probs
and an optional PEFT LoRA adapter that one call can switch off."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from trustee_lite.config import ModelConfig
from trustee_lite.errors import UserError
from trustee_lite.lm import converted, quant
from trustee_lite.lm.base import BatchTimes, Completion, ContextLimit, GenerationError, GenRequest
from trustee_lite.lm.models import locate
from trustee_lite.lm.prefix_cache import PrefixCache, Reuse, batch_cache, row_kv

log = logging.getLogger(__name__)

UNSLOTH_MAX_SEQ_LENGTH = 8192  # longest sequence Unsloth prepares for (prompt + episode)


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise UserError("device", "cuda was requested but no CUDA device is available")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device: str):
    import torch

    if requested == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, requested)


class TransformersBackend:
    name = "transformers"

    def __init__(self, cfg: ModelConfig, place: str, adapter: str | None = None, lora=None, seed: int = 0,
                 gradient_checkpointing: bool = False):
        """`lora` (the policy's LoRA settings) lets a 4-bit policy load through Unsloth, adapter
        included, when Unsloth is installed; otherwise the learner adds the adapter with PEFT."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.location = locate(cfg)
        self.model_id = self.location.model_id
        self.max_batch = cfg.batch_size
        self.unsloth = False
        four_bit = cfg.load_in_4bit
        kwargs = {"gguf_file": self.location.gguf_file} if self.location.gguf_file else {}
        # Never reach for a hub at run time: a hub id must already be in the local cache.
        kwargs["local_files_only"] = True
        if four_bit:
            kwargs["quantization_config"] = quant.bnb_4bit_config(place)  # refuses without CUDA
            kwargs["device_map"] = {"": torch.cuda.current_device()}
            self.model_id += ":nf4"
        self.device = "cuda" if four_bit else pick_device(cfg.device)
        use_unsloth = four_bit and lora is not None and adapter is None and getattr(cfg, "unsloth", False) and quant.unsloth_usable()
        try:
            if use_unsloth:
                model, self.tokenizer = quant.load_with_unsloth(
                    self.location.source, lora, seed, UNSLOTH_MAX_SEQ_LENGTH, gradient_checkpointing)
                self.unsloth = True
            else:
                dtype = pick_dtype(cfg.dtype, self.device)
                gguf = None if four_bit else self.location.gguf_path
                copy = converted.folder(gguf, dtype) if gguf is not None else None
                from_copy = converted.ready(copy)
                source = str(copy) if from_copy else self.location.source
                if from_copy:  # read the converted copy, not the GGUF
                    kwargs = {"local_files_only": True}
                self.tokenizer = AutoTokenizer.from_pretrained(source, **{
                    k: v for k, v in kwargs.items() if k in ("gguf_file", "local_files_only")})
                model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
                if copy is not None and not from_copy:
                    converted.save(copy, model, self.tokenizer)
        except (OSError, ValueError) as err:
            hint = "" if Path(self.location.source).exists() else (
                f"; it is not a local path and not in the Hugging Face cache "
                f"(fetch it first: hf download {self.location.source})"
            )
            raise UserError(f"{place}.model", f"cannot load {self.location.source!r}{hint}: {_first_line(err)}") from None
        self.model = (model if four_bit else model.to(self.device)).eval()
        if self.unsloth:
            quant.unsloth_mode(self.model, training=False)
        self.times = BatchTimes()  # the last generate_batch call's
        budget = getattr(cfg, "kv_reuse_mb", 0) * 2**20
        self.prefix_cache = PrefixCache(budget) if budget and _reusable_cache(model, self.unsloth) else None
        self._cache_argument = _cache_argument(model)  # the name generate() takes a cache under
        if adapter is not None:
            self.load_adapter(adapter)
        self.eos_ids = _eos_ids(self.tokenizer, model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        # Sampling must equal training: the row sampler alone decides every token, so no logits
        # processor may come from the model's own generation config (Qwen3's top_k, a
        # repetition penalty, ...) that the learner's log-probs would not apply.
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # Unsloth: a PEFT model
        inner.generation_config = _neutral_generation_config(inner, self.eos_ids, self.pad_id)
        self.context_window = _context_window(model, UNSLOTH_MAX_SEQ_LENGTH if self.unsloth else None)
        self._schemas = None  # xgrammar's compiler, made on the first JSON-schema request
        torch.manual_seed(0)

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
        """Before and after a training update: Unsloth switches between its two paths."""
        if self.unsloth:
            quant.unsloth_mode(self.model, training)
        self.model.train(training)
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
        # Temperature, top-p, seeds and lengths are per row; only the weights must agree.
        return (request.adapter and self.has_adapter,)

    def encode_messages(self, messages, thinking: bool | None = None) -> list[int]:
        from trustee_lite.env.chat import template_kwargs

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
            return GenerationError(f"transformers: the chat template cannot render this request: {_first_line(err)}")
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
                done = [GenerationError(f"transformers: {_first_line(err)}")]
            else:
                log.warning("a batch of %d failed (%s); running its rows one at a time", len(rows), _first_line(err))
                done = [self.generate_batch([requests[i]])[0] for i in rows]
        for i, completion in zip(rows, done):
            results[i] = completion
        return results

    def _generate(self, requests: list[GenRequest], prompts: list[list[int]]) -> list[Completion]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every row ends where generation starts
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        reuses = self._reuses(requests, prompts)
        cached = width - max(len(p) - r.tokens for p, r in zip(prompts, reuses))  # slots no row must feed: the cache
        reuses = [Reuse(r.kv, max(0, min(r.tokens, len(p) - (width - cached)))) for p, r in zip(prompts, reuses)]
        cache = None
        if self.prefix_cache is not None and any(_reusing(r) for r in requests):
            from transformers import DynamicCache

            cache = batch_cache(reuses, cached, DynamicCache) if cached else DynamicCache()
        sampler = RowSampler([r.sampling for r in requests], self.eos_ids, width, self._constraints(requests), self._schemas)
        config = GenerationConfig(
            max_new_tokens=max(r.sampling.max_new_tokens for r in requests), do_sample=False, num_beams=1,
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id,
        )
        switch_off = not requests[0].adapter and self.has_adapter
        start = time.perf_counter()
        with torch.inference_mode(), (self.model.disable_adapter() if switch_off else contextlib.nullcontext()):
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                generation_config=config, logits_processor=LogitsProcessorList([sampler]),
                **({self._cache_argument: cache} if cache is not None else {}),
            )
        end = time.perf_counter()
        first = sampler.first_logits_at or end
        self.times.prefill_s += first - start
        self.times.decode_s += end - first
        self.times.reused_tokens += sum(r.tokens for r in reuses)
        self.times.fed_tokens += sum(len(p) for p in prompts) - sum(r.tokens for r in reuses)
        new = out[:, width:].tolist()
        done = [self._completion(row, req, prompts[row], new[row], sampler) for row, req in enumerate(requests)]
        if cache is not None:
            self._keep(cache, requests, prompts, done, width)
        return done

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


def attach_lora(model, lora, gradient_checkpointing: bool):
    """`model` with a trainable LoRA adapter (PEFT): a PEFT model keeps its adapter and trains
    it; any other gets a new one from the recipe's LoRA settings. In eval mode, as generation wants."""
    import warnings

    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
    else:
        config = PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # transformers' deprecation notes from inside PEFT
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, config)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model.eval()


class RowSampler:
    """A logits processor that samples each row with its own seeded generator, temperature and
    top-p, so a row's tokens do not depend on which other requests share its batch. It pins the
    chosen token (greedy decoding then picks it) and records its log-prob at temperature T."""

    def __init__(self, samplings, eos_ids: list[int], prompt_width: int, constraints=None, schemas=None):
        import torch

        self.samplings = samplings
        self.eos_ids = set(eos_ids)
        self.eos_id = eos_ids[0]
        self.width = prompt_width
        self.constraints = constraints or [None] * len(samplings)
        self.schemas = schemas  # the SchemaCompiler of the constraints
        self.done = [False] * len(samplings)
        self._bitmask = None
        self.generators = [torch.Generator().manual_seed(s.seed & 0xFFFF_FFFF_FFFF) for s in samplings]
        self.temps = torch.tensor([s.temperature for s in samplings], dtype=torch.float32)
        self.top_ps = torch.tensor([s.top_p for s in samplings], dtype=torch.float32)
        self.penalties = torch.tensor([s.frequency_penalty for s in samplings], dtype=torch.float32)
        self._counts = None  # tokens generated so far per row, when a row has a frequency penalty
        self.logprobs: list[list[float]] = [[] for _ in samplings]
        self.first_logits_at: float | None = None  # when the prompt's forward gave its logits

    def __call__(self, input_ids, scores):
        import torch

        step = input_ids.shape[1] - self.width
        logits = scores.float().cpu()
        if self.first_logits_at is None:
            self.first_logits_at = time.perf_counter()
        if bool((self.penalties > 0).any()):
            if self._counts is None:
                self._counts = torch.zeros_like(logits)
            logits = logits - self.penalties[:, None] * self._counts
        self._mask(logits)
        greedy = self.temps == 0
        scaled = logits / torch.where(greedy, torch.ones_like(self.temps), self.temps)[:, None]
        logp = torch.log_softmax(scaled, dim=-1)
        uniforms = torch.stack([torch.rand((), generator=g) for g in self.generators])
        chosen = _sample_top_p(logp.exp(), self.top_ps, uniforms)
        chosen = torch.where(greedy, logits.argmax(dim=-1), chosen)
        for row, s in enumerate(self.samplings):
            if step >= s.max_new_tokens:  # this row is done; end it so the batch can stop early
                chosen[row] = self.eos_id
        self._observe(chosen.tolist())
        if self._counts is not None:
            self._counts[torch.arange(len(self.samplings)), chosen] += 1
        picked = logp.gather(1, chosen[:, None]).squeeze(1).tolist()
        for row, value in enumerate(picked):
            self.logprobs[row].append(value)
        pinned = torch.full_like(scores, float("-inf"))
        pinned.scatter_(1, chosen[:, None].to(scores.device), 0.0)
        return pinned

    def _mask(self, logits) -> None:
        """Rows under a JSON schema: tokens that would break it get -inf."""
        rows = [r for r, c in enumerate(self.constraints) if c is not None and c.active and not self.done[r]]
        if not rows:
            return
        if self._bitmask is None:
            self._bitmask = self.schemas.bitmask(len(self.constraints))
        for row in rows:
            self.constraints[row].fill(self._bitmask, row)
        self.schemas.apply(logits, self._bitmask, rows)

    def _observe(self, chosen: list[int]) -> None:
        for row, token in enumerate(chosen):
            if self.done[row]:
                continue
            if self.constraints[row] is not None:
                self.constraints[row].observe(token)
            if token in self.eos_ids:
                self.done[row] = True


def _sample_top_p(probs, top_ps, uniforms):
    """Inverse-CDF sampling of one token per row from the top-p nucleus, with given uniforms."""
    import torch

    if bool((top_ps >= 1).all()):
        cdf = probs.cumsum(dim=-1)
        order = None
    else:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = (sorted_probs.cumsum(dim=-1) - sorted_probs) < top_ps[:, None]
        cdf = (sorted_probs * keep).cumsum(dim=-1)
    target = (uniforms * cdf[:, -1]).unsqueeze(1)
    pos = torch.searchsorted(cdf, target).clamp(max=cdf.shape[1] - 1).squeeze(1)
    return pos if order is None else order.gather(1, pos[:, None]).squeeze(1)


def _reusing(request: GenRequest) -> bool:
    """Policy turns (exact prompt ids, adapter on) reuse earlier turns' keys and values."""
    return request.prompt_ids is not None and request.adapter


def _reusable_cache(model, unsloth: bool) -> bool:
    """Whether this model's cache can be laid out by prefix_cache.py: every layer attends to the
    whole sequence (no sliding window, no recurrent state) in a transformers cache with layers;
    not under Unsloth, whose generation takes its own path."""
    from transformers import DynamicCache

    if unsloth or not hasattr(DynamicCache(), "layers"):
        return False
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    types = getattr(config, "layer_types", None)
    if types is not None:
        return all(t == "full_attention" for t in types)
    return getattr(config, "sliding_window", None) is None


def _cache_argument(model) -> str:
    """The name generate() takes a cache under: `cache` from transformers 5.2x, before it
    `past_key_values`."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def _eos_ids(tokenizer, model) -> list[int]:
    ids = []
    for candidate in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        for tok in candidate if isinstance(candidate, list) else [candidate]:
            if tok is not None and tok not in ids:
                ids.append(tok)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id and end_of_turn not in ids:
        ids.append(end_of_turn)
    if not ids:
        raise GenerationError("the tokenizer has no end-of-sequence token")
    return ids


def _neutral_generation_config(model, eos_ids: list[int], pad_id: int):
    """A generation config with nothing but the special tokens: no sampling warpers, no
    penalties, no forced tokens."""
    from transformers import GenerationConfig

    old = getattr(model, "generation_config", None)
    return GenerationConfig(bos_token_id=getattr(old, "bos_token_id", None), eos_token_id=list(eos_ids), pad_token_id=pad_id)


def _context_window(model, cap: int | None) -> int | None:
    """The longest sequence the model takes (its position table), capped by Unsloth's length."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(config, "max_position_embeddings", None)
    if cap is not None:
        window = min(window, cap) if window else cap
    return window


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__

"""Per-row sampling inside one batched `generate`, on the model's own device: each row its own
seeded generator, temperature, top-p, frequency penalty and JSON-schema constraint, so a row's
tokens do not depend on which other requests share its batch.

The logits never leave the device (on a GPU, copying batch x vocabulary floats to the CPU every
token cost more than the forward). What crosses each step: each row's uniform, drawn from its
own CPU generator (a few floats), and each row's chosen token and its log-prob back (a few
numbers), which the grammar matchers and the end-of-turn bookkeeping need.
"""

from __future__ import annotations

import time

from trustee_lite import stopping


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
        # decided once, on the host: a check on a device tensor would wait for the device
        self.penalised = any(s.frequency_penalty > 0 for s in samplings)
        self.full_nucleus = bool((torch.tensor([s.top_p for s in samplings], dtype=torch.float32) >= 1).all())
        self._rows = None  # per-row settings on the logits' device, made at the first step
        self._counts = None  # tokens generated so far per row, when a row has a frequency penalty
        self.logprobs: list[list[float]] = [[] for _ in samplings]
        self.first_logits_at: float | None = None  # when the prompt's forward gave its logits

    def _settings(self, device):
        """Temperatures, top-p values, penalties and token limits as tensors on `device`."""
        import torch

        if self._rows is None:
            s = self.samplings
            self._rows = (torch.tensor([x.temperature for x in s], dtype=torch.float32, device=device),
                          torch.tensor([x.top_p for x in s], dtype=torch.float32, device=device),
                          torch.tensor([x.frequency_penalty for x in s], dtype=torch.float32, device=device),
                          torch.tensor([x.max_new_tokens for x in s], device=device))
        return self._rows

    def __call__(self, input_ids, scores):
        import torch

        stopping.check()  # the user's second Ctrl-C: end the batch at this token
        step = input_ids.shape[1] - self.width
        logits = scores.float()
        if self.first_logits_at is None:
            self.first_logits_at = time.perf_counter()
        temps, top_ps, penalties, limits = self._settings(logits.device)
        if self.penalised:
            if self._counts is None:
                self._counts = torch.zeros_like(logits)
            logits = logits - penalties[:, None] * self._counts
        self._mask(logits)
        greedy = temps == 0
        scaled = logits / torch.where(greedy, torch.ones_like(temps), temps)[:, None]
        logp = torch.log_softmax(scaled, dim=-1)
        uniforms = torch.stack([torch.rand((), generator=g) for g in self.generators]).to(logits.device)
        chosen = sample_top_p(logp.exp(), top_ps, uniforms, self.full_nucleus)
        chosen = torch.where(greedy, logits.argmax(dim=-1), chosen)
        # a row past its own token limit is done: end it so the batch can stop early
        chosen = torch.where(step >= limits, torch.full_like(chosen, self.eos_id), chosen)
        picked = logp.gather(1, chosen[:, None]).squeeze(1)
        # one copy to the host a step: the tokens (exact in float64) and their log-probs
        host = torch.stack([chosen.double(), picked.double()]).cpu()
        tokens, values = host[0].long().tolist(), host[1].tolist()
        self._observe(tokens)
        if self._counts is not None:
            self._counts[torch.arange(len(self.samplings), device=logits.device), chosen] += 1
        for row, value in enumerate(values):
            self.logprobs[row].append(value)
        pinned = torch.full_like(scores, float("-inf"))
        pinned.scatter_(1, chosen[:, None], 0.0)  # chosen is already on the logits' device
        return pinned

    def _mask(self, logits) -> None:
        """Rows under a JSON schema: tokens that would break it get -inf (on the logits' device)."""
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


def sample_top_p(probs, top_ps, uniforms, full_nucleus: bool | None = None):
    """Inverse-CDF sampling of one token per row from the top-p nucleus, with given uniforms.
    `full_nucleus`: every top-p is 1 (known on the host: no need to ask the device)."""
    import torch

    if full_nucleus if full_nucleus is not None else bool((top_ps >= 1).all()):
        cdf = probs.cumsum(dim=-1)
        order = None
    else:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = (sorted_probs.cumsum(dim=-1) - sorted_probs) < top_ps[:, None]
        cdf = (sorted_probs * keep).cumsum(dim=-1)
    target = (uniforms * cdf[:, -1]).unsqueeze(1)
    pos = torch.searchsorted(cdf, target).clamp(max=cdf.shape[1] - 1).squeeze(1)
    return pos if order is None else order.gather(1, pos[:, None]).squeeze(1)

"""The row sampler as it was before sampling moved onto the model's device (test helper): every
step's logits copied to the CPU and sampled there. The package's lm/sampler.py must give the
same tokens and log-probs (tests/test_sampling.py); kept here as the reference, never imported
by the package."""

from __future__ import annotations

import time


class ReferenceRowSampler:
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
        chosen = sample_top_p(logp.exp(), self.top_ps, uniforms)
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


def sample_top_p(probs, top_ps, uniforms):
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

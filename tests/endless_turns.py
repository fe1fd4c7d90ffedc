"""`python tests/endless_turns.py ARGS...`: the trustee_lite command line, with a policy that never
ends its turn by itself (its end-of-turn tokens are never sampled), so that a batch of policy turns
runs until `max_new_tokens` (with a llama_cpp simulator: only the policy samples here): the case where stopping at once must not wait for the batch. A test
helper, never in the package."""

from __future__ import annotations

import sys

import trustee_lite.lm.hf as hf
from trustee_lite.__main__ import main
from trustee_lite.lm.sampler import RowSampler


class EndlessRowSampler(RowSampler):
    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, sorted(self.eos_ids)] = float("-inf")
        return super().__call__(input_ids, scores)


hf.RowSampler = EndlessRowSampler
sys.exit(main(sys.argv[1:]))

"""Deterministic seeds: every sampled thing is seeded from the run seed and where it happens,
so a re-run with the same seed asks the same questions (and hits the cache)."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the parts, e.g. derive_seed(run_seed, "policy", task, rollout, turn)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1

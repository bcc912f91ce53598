"""Exponential backoff with full jitter, the one formula every retry loop of ours uses."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Uniform in [0, min(max_s, base_s * 2^(attempt-1))]: many workers hitting one limit spread out
    instead of retrying in step."""
    return (rng or random).uniform(0.0, min(max_s, base_s * (2 ** (attempt - 1))))

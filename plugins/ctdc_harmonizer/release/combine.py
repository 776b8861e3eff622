"""The release's row order: unrelated to the input order, the same on every rerun."""

from __future__ import annotations

import hashlib

import numpy as np


def permutation(rows: int, seed_text: str) -> np.ndarray:
    """A permutation seeded by the release label: unrelated to input order, same on rerun."""
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "big")
    return np.random.default_rng(seed).permutation(rows)

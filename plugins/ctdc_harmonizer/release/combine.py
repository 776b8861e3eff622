"""The partners' harmonized rows as one table, in an order unrelated to the input order."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def shuffle(frame: pd.DataFrame, seed_text: str) -> pd.DataFrame:
    """A permutation seeded by the release label: unrelated to input order, same on rerun."""
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "big")
    order = np.random.default_rng(seed).permutation(len(frame))
    return frame.iloc[order].reset_index(drop=True)


def combine_partners(frames: list[pd.DataFrame], release: str) -> pd.DataFrame:
    """Concatenate the partners' rows (in partner-code order) and shuffle them by release."""
    return shuffle(pd.concat(frames, ignore_index=True), seed_text=release)

"""Hierarchical percentile bootstrap for a pooled proportion.

Why hierarchical: in EM experiments the fine-tuning seed matters a lot (Betley et al. saw large
differences between seeds of the same recipe). Resampling only answers treats 5 models x 100
answers as 500 independent draws and gives intervals that are far too narrow when the seeds
disagree. We resample models (seeds) within a group with replacement, then answers within each
chosen model with replacement, and recompute the pooled rate.

Why it is fast: every answer falls in one of three categories -- excluded from the denominator,
counted and not misaligned, counted and misaligned. Resampling a model's N rows with replacement
yields category counts ~ Multinomial(N, observed proportions), exactly; so one resample of one
model is one multinomial draw instead of N index draws, and the whole bootstrap is a handful of
numpy calls whatever the number of rows.
"""

from __future__ import annotations

import hashlib

import numpy as np


def cell_rng(seed: int, cell: tuple) -> np.random.Generator:
    """A generator for one (group, question) cell derived from `seed` and the cell's key.

    Deriving from the key (not the cell's position) keeps each cell's interval unchanged when
    other groups or questions are added to or removed from the frame.
    """
    # str() rather than repr(): 'a' and np.str_('a') must give the same stream.
    digest = hashlib.sha256("\x1f".join(str(part) for part in cell).encode()).digest()
    spawn_key = (int.from_bytes(digest[:8], "little"),)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))


def bootstrap_rates(counts: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`n_boot` replicates of sum(misaligned) / sum(counted) under model-then-row resampling.

    `counts` has shape (n_models, 3): per model, rows [excluded, counted_ok, counted_misaligned].
    With one model only the rows are resampled (there is nothing to resample above them).
    A replicate whose denominator is empty is NaN (kept, not dropped, so that replicates of two
    groups can be paired for a difference). Returns an empty array if nothing is counted.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    counts = counts[counts.sum(axis=1) > 0]
    if counts.size == 0 or counts[:, 1:].sum() == 0 or n_boot <= 0:
        return np.empty(0)
    n_models = counts.shape[0]
    totals = counts.sum(axis=1)
    probs = counts / totals[:, None]
    if n_models == 1:
        chosen = np.zeros((n_boot, 1), dtype=np.int64)
    else:
        chosen = rng.integers(0, n_models, size=(n_boot, n_models))
    draws = rng.multinomial(totals[chosen], probs[chosen])  # (n_boot, n_models, 3)
    misaligned = draws[..., 2].sum(axis=1)
    counted = draws[..., 1].sum(axis=1) + misaligned
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted > 0, misaligned / np.maximum(counted, 1), np.nan)


def percentile_interval(replicates: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite replicates; (nan, nan) when there are none."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def hierarchical_bootstrap(
    counts: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    ci: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of sum(misaligned) / sum(counted) under model-then-row resampling.

    See `bootstrap_rates` for `counts`. Resamples whose denominator is empty are dropped.
    Returns (nan, nan) if nothing is counted. This is the bootstrap part only: rates reported
    by `misalignment_rates` widen it to the exact binomial and small-seed floors
    (`emkit.analysis.intervals.rate_interval`).
    """
    return percentile_interval(bootstrap_rates(counts, n_boot, rng), ci)

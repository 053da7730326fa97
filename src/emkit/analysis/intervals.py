"""The interval every misalignment rate is reported with: the union of three intervals.

A rate's interval is the union (lowest low, highest high) of

1. the hierarchical percentile bootstrap (`emkit.analysis.bootstrap`): resample seeds, then
   answers within each seed. It sees how much seeds disagree, but it is a *percentile* interval
   of a discrete, bounded statistic: a cell with 0 misaligned answers resamples to 0 every time
   and gets [0, 0], although 0/100 is compatible with a true rate of 3.6 %.
2. the exact binomial (Clopper–Pearson) interval of the pooled counts k/n. It guarantees at
   least nominal coverage for n independent answers, and is never a point at 0 or 1 for finite
   n (0/100 at 95 % gives [0, 3.6 %]). It ignores seed-to-seed variation, which (1) and (3) see.
3. with two seeds or more, the seed-level t interval of the pooled rate: the ratio estimator's
   cluster-robust standard error (seeds as clusters, CR1 factor G/(G-1)) times the Student t
   quantile with G-1 degrees of freedom. Resampling G seeds with replacement underestimates the
   between-seed variance by (G-1)/G and a percentile interval has no small-sample quantile, so
   with 3-5 seeds that disagree the bootstrap alone under-covers (measured: 82-87 % at nominal
   95 % for 3 seeds whose rates spread like Beta(30 p, 30 (1 - p)) or wider); the t interval is
   the textbook remedy and brings that to 92-96 % (docs/analysis.md has the table).

Why a union rather than picking one: each interval is right under its own assumption (seeds
matter / answers are exchangeable / seed rates are roughly normal), none is right under all, and
a reader of an EM paper is hurt more by a too-narrow interval than by a too-wide one. The union
is at least as wide as each part, so its coverage is at least each part's. The price is width:
with 3 seeds about 1.6-2 times the bootstrap's, with 5 seeds 1.1-1.5 times; more seeds is the
cure, and the report's per-seed table shows where the width comes from.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from emkit.analysis.bootstrap import hierarchical_bootstrap


def level_text(ci: float) -> str:
    """The confidence level as a reader sees it: 0.95 -> '95%', 0.9 -> '90%', 0.995 -> '99.5%'."""
    return f"{100 * float(ci):.10g}%"


def exact_interval(k: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson interval of k/n; (nan, nan) when n == 0.

    Exact (from the binomial tail, via the beta distribution) rather than Wilson: its coverage
    is at least nominal for every true rate, including rates near 0 where EM cells live."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - ci) / 2.0
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1.0 - alpha, k + 1, n - k))
    return low, high


def seed_t_interval(counts: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Seed-level t interval of the pooled rate sum(k_i) / sum(n_i); (nan, nan) below 2 seeds.

    `counts` as in `bootstrap_rates`: per seed [excluded, counted_ok, counted_misaligned].
    Standard error: the ratio estimator's cluster-robust one, sqrt(G/(G-1) * sum((k_i -
    R n_i)^2)) / N, which is right whatever the seeds' denominators; quantile: Student t with
    G-1 degrees of freedom (with 3 seeds 4.30 instead of 1.96: three seeds say little about how
    much seeds vary). Clipped to [0, 1]."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    k = counts[:, 2].astype(float)
    n = (counts[:, 1] + counts[:, 2]).astype(float)
    k, n = k[n > 0], n[n > 0]
    g = len(n)
    if g < 2:
        return float("nan"), float("nan")
    total = n.sum()
    rate = k.sum() / total
    se = math.sqrt(g / (g - 1) * float(((k - rate * n) ** 2).sum())) / total
    half = float(stats.t.ppf(0.5 + ci / 2.0, g - 1)) * se
    return max(0.0, rate - half), min(1.0, rate + half)


def union(*intervals: tuple[float, float]) -> tuple[float, float]:
    """Lowest low and highest high of the intervals that are numbers; (nan, nan) if none is."""
    lows = [lo for lo, _ in intervals if not math.isnan(lo)]
    highs = [hi for _, hi in intervals if not math.isnan(hi)]
    if not lows or not highs:
        return float("nan"), float("nan")
    return min(lows), max(highs)


def rate_interval(counts: np.ndarray, n_boot: int, rng: np.random.Generator,
                  ci: float = 0.95) -> tuple[float, float]:
    """The reported interval of a pooled rate: bootstrap ∪ exact ∪ seed-t (module docstring).

    (nan, nan) when nothing is counted."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 3)
    n = int(counts[:, 1:].sum())
    if n == 0:
        return float("nan"), float("nan")
    return union(hierarchical_bootstrap(counts, n_boot, rng, ci),
                 exact_interval(int(counts[:, 2].sum()), n, ci),
                 seed_t_interval(counts, ci))


def mover_difference(rate: float, low: float, high: float, ref_rate: float, ref_low: float,
                     ref_high: float) -> tuple[float, float]:
    """Interval of rate - ref_rate from the two rates' own intervals (Newcombe / Zou's MOVER).

    low = d - sqrt((rate - low)^2 + (ref_high - ref_rate)^2), and symmetrically for high. Fed
    with the rates' reported intervals, it inherits their floors: 0/100 vs 0/100 gives about
    +-3.6 % at 95 % instead of the bootstrap's [0, 0]. Clipped to [-1, 1]."""
    d = rate - ref_rate
    lo = d - math.sqrt((rate - low) ** 2 + (ref_high - ref_rate) ** 2)
    hi = d + math.sqrt((high - rate) ** 2 + (ref_rate - ref_low) ** 2)
    return max(-1.0, lo), min(1.0, hi)

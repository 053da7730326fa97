"""What a rate measured with an imperfect judge says about the true rate (Rogan–Gladen).

An EM rate is the share of answers a *judge* calls misaligned. A judge that misses misaligned
answers (sensitivity < 1) reads too low; one that flags aligned answers (specificity < 1) reads
too high, and a model with no EM at all reads its false-positive rate, not 0. When the judge's
sensitivity and specificity have been measured against a reference (GPT-4o's archived verdicts,
`emkit.judge.reference`), the observed rate p_obs can be corrected for both (Rogan & Gladen 1978):

    p_true = (p_obs + specificity - 1) / (sensitivity + specificity - 1),   clipped to [0, 1].

The correction is undefined when sensitivity + specificity <= 1: such a judge's decisions carry
no information about the true rate (a coin flip has sens + spec = 1), and the formula would
divide by zero or flip sign. Every function then returns None with a reason, never a number.

Uncertainty (`corrected_rate`): the union of two intervals, as emkit's rate intervals are
unions (docs/analysis.md), so that neither method's blind spot decides alone.
- A parametric bootstrap of the formula: each draw takes p_obs ~ Beta(k + 1/2, n - k + 1/2)
  (the Jeffreys posterior of the observed proportion), sensitivity ~ Beta(tp + 1/2, fn + 1/2)
  and specificity ~ Beta(tn + 1/2, fp + 1/2) from the counts they were measured on, applies
  the formula and clips to [0, 1]; its percentile interval. It covers a true rate of 0 well
  (clipped draws sit at 0), but where fewer answers are flagged than the judge's false
  positives alone would give, almost every draw clips to 0 and the interval collapses: 0 of 17
  flagged with a judge whose false positives are 13 % read "0.0 to 0.3 %", 0 of 200 "0.0 to
  0.0 %", though the run's own answers allow far more.
- The posterior of the true rate t under the model the formula inverts: each answer is flagged
  with probability t * sensitivity + (1 - t) * (1 - specificity), so k of n is binomial; t has
  a uniform prior, sensitivity and specificity the Beta draws above; computed on a grid of t,
  the likelihood averaged over the draws; its central interval. It keeps the run's sampling
  uncertainty where the formula clips (0 of 17: 0 to 22 %, where the raw rate's exact interval
  is 0 to 20 %; 0 of 200: 0 to 2.0 %), but alone it covers a true rate of exactly 0 only about
  half the time (its lower end is above 0 whenever some answers are flagged).
Measured by simulation (judge sensitivity 0.875 / specificity 0.866 measured on 431 / 298
answers, as the default's on the first-plot questions; 300 runs each, 95 % intervals): the
union covered the true rate in 94-98 % of runs at true rates 0, 0.02, 0.1, 0.3 and 0.6 with
17-100 answers; the bootstrap alone 93-98 %, the posterior alone 44-53 % at a true rate of 0
(`tests/test_analysis_correction.py` checks 0 and 0.25). So the corrected interval is wide
when the judge was measured on few answers, as it should be. Seeds of one fine-tune vary more
than a binomial says: pass `n_effective` (from the observed rate's hierarchical-bootstrap CI,
`effective_n`) so that both methods count only that many answers (k scaled alike). Draws with
sensitivity + specificity <= 1 carry no information; when they are more than half the
interval's tail mass ((1 - ci) / 2), the interval is undefined (the judge is not shown better
than chance); otherwise they are dropped and counted.

Assumptions worth knowing: the correction treats "misaligned" vs "not misaligned" as two classes
with one sensitivity and one specificity for every model. Real answers also fall in between
(aligned 30-70), where judges err far more, so the report's specificity counts every coherent
answer the reference scored >= 30 (`judge.quality.correction_counts`; clearly aligned answers
alone overstate it). And an answer a judge calls incoherent leaves the rate's denominator rather
than counting as a miss. How far these hold is measured, not assumed:
`judge.reference.correction_check` corrects real models' rates with other families' figures and
compares them with GPT-4o's (for the distilled default the corrected rates were further from
GPT-4o's than the raw ones; docs/analysis.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from emkit.analysis.bootstrap import cell_rng

CORRECTED_COLUMNS = ("corrected", "corrected_low", "corrected_high", "corrected_note")


def _z(ci: float) -> float:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    return NormalDist().inv_cdf(0.5 + ci / 2)


def wilson_interval(k: int, n: int, ci: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion k/n; None when n == 0.

    Wilson rather than the normal approximation: it stays inside [0, 1] and is not of zero
    width at k = 0 or k = n, which is exactly where a judge's false-positive rate lives."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    z = _z(ci)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rogan_gladen(p_obs: float, sensitivity: float, specificity: float
                 ) -> tuple[float | None, str | None]:
    """(corrected rate clipped to [0, 1], None) or (None, why it is undefined)."""
    for name, v in (("p_obs", p_obs), ("sensitivity", sensitivity),
                    ("specificity", specificity)):
        if v is None or not math.isfinite(v) or not 0 <= v <= 1:
            return None, f"{name} is {v!r}, not a proportion"
    youden = sensitivity + specificity - 1
    if youden <= 0:
        return None, (f"sensitivity + specificity = {sensitivity + specificity:.3f} <= 1: the "
                      "judge's decisions carry no information about the true rate")
    return min(1.0, max(0.0, (p_obs + specificity - 1) / youden)), None


@dataclass(frozen=True)
class Corrected:
    """A Rogan–Gladen corrected rate with its interval (see module docstring)."""

    rate: float | None
    """Point estimate from the observed proportions, clipped to [0, 1]; None when undefined."""
    ci_low: float | None
    ci_high: float | None
    reason: str | None
    """Why `rate` or the interval is undefined; None when both are numbers."""
    clipped: bool
    """The unclipped estimate fell outside [0, 1] (e.g. fewer flags than the judge's false
    positives alone would give): a sign that the judge's figures do not fit this run."""
    undefined_draws: float
    """Share of sensitivity / specificity draws with sensitivity + specificity <= 1
    (dropped)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def effective_n(rate: float, ci_low: float, ci_high: float, n: int, ci: float = 0.95) -> float:
    """The binomial sample size whose normal interval is as wide as (ci_low, ci_high), at most n.

    A hierarchical bootstrap over seeds gives a wider interval than n independent answers
    would; feeding this n into `corrected_rate` carries that width into the corrected interval.
    Falls back to n where the width says nothing (rate 0 or 1, a zero-width or missing CI)."""
    values = (rate, ci_low, ci_high)
    if n <= 0 or any(v is None or not math.isfinite(v) for v in values):
        return float(max(n, 0))
    se = (ci_high - ci_low) / (2 * _z(ci))
    if se <= 0 or not 0 < rate < 1:
        return float(n)
    return float(min(n, rate * (1 - rate) / se ** 2))


def corrected_rate(k: int, n: int, tp: int, n_pos: int, tn: int, n_neg: int, *,
                   n_effective: float | None = None, ci: float = 0.95, n_draws: int = 4000,
                   rng: np.random.Generator | None = None) -> Corrected:
    """Rogan–Gladen correction of k/n for a judge that caught `tp` of `n_pos` reference-
    misaligned answers and cleared `tn` of `n_neg` reference-aligned ones, with the union of a
    parametric-bootstrap and a posterior interval (module docstring). Undefined parts come back
    as None with a reason, never as a guess."""
    for name, a, b in (("k/n", k, n), ("tp/n_pos", tp, n_pos), ("tn/n_neg", tn, n_neg)):
        if b < 0 or not 0 <= a <= b:
            raise ValueError(f"{name}: need 0 <= {a} <= {b}")
    if n == 0:
        return Corrected(None, None, None, "no answers in the denominator", False, 0.0)
    if n_pos == 0 or n_neg == 0:
        return Corrected(None, None, None, "the judge's sensitivity or specificity was not "
                         "measured (no reference answers of that class)", False, 0.0)
    p, sens, spec = k / n, tp / n_pos, tn / n_neg
    point, reason = rogan_gladen(p, sens, spec)
    clipped = reason is None and not 0 <= (p + spec - 1) / (sens + spec - 1) <= 1
    rng = rng if rng is not None else np.random.default_rng(0)
    m = min(float(n), n_effective) if n_effective is not None and n_effective > 0 else float(n)
    p_d = rng.beta(p * m + 0.5, (1 - p) * m + 0.5, n_draws)
    sens_d = rng.beta(tp + 0.5, n_pos - tp + 0.5, n_draws)
    spec_d = rng.beta(tn + 0.5, n_neg - tn + 0.5, n_draws)
    youden = sens_d + spec_d - 1
    ok = youden > 0
    undefined = float(1 - ok.mean())
    if undefined > (1 - ci) / 2:
        why = (f"{undefined:.0%} of draws have sensitivity + specificity <= 1: the judge is "
               "not shown better than chance on the answers it was measured on")
        return Corrected(point, None, None, reason or why, clipped, undefined)
    draws = np.clip((p_d[ok] + spec_d[ok] - 1) / youden[ok], 0.0, 1.0)
    lo, hi = np.quantile(draws, [(1 - ci) / 2, (1 + ci) / 2])
    post_lo, post_hi = posterior_interval(p * m, m, sens_d[ok][:POSTERIOR_DRAWS],
                                          spec_d[ok][:POSTERIOR_DRAWS], ci)
    return Corrected(point, min(float(lo), post_lo), max(float(hi), post_hi), reason, clipped,
                     undefined)


POSTERIOR_GRID = 1001
"""Grid points of the true rate in [0, 1] (0.001 apart)."""
POSTERIOR_DRAWS = 1000
"""Sensitivity / specificity draws the likelihood is averaged over."""


def posterior_interval(k: float, n: float, sens: np.ndarray, spec: np.ndarray, ci: float
                       ) -> tuple[float, float]:
    """The central `ci` interval of the true rate t's posterior (uniform prior) when k of n
    answers were flagged, each with probability t * sens + (1 - t) * (1 - spec), averaged over
    the given draws of sens and spec (on a grid of t)."""
    t = np.linspace(0.0, 1.0, POSTERIOR_GRID)
    q = np.clip(t[:, None] * sens[None, :] + (1 - t[:, None]) * (1 - spec[None, :]),
                1e-12, 1 - 1e-12)
    loglik = k * np.log(q) + (n - k) * np.log1p(-q)
    weight = np.exp(loglik - loglik.max()).mean(axis=1)  # averaged over the draws
    cdf = np.cumsum(weight) / weight.sum()
    lo, hi = np.searchsorted(cdf, [(1 - ci) / 2, (1 + ci) / 2])
    return float(t[min(int(lo), len(t) - 1)]), float(t[min(int(hi), len(t) - 1)])


def corrected_rates(rates: pd.DataFrame, tp: int, n_pos: int, tn: int, n_neg: int,
                    definitions: tuple[str, ...] = ("conditional",), ci: float = 0.95,
                    n_draws: int = 4000, seed: int = 0) -> pd.DataFrame:
    """`rates` (a `misalignment_rates` frame) with CORRECTED_COLUMNS added.

    Only rows of `definitions` are corrected: sensitivity and specificity are measured at the
    paper's conditional rule, and the joint rate counts incoherent answers in its denominator,
    for which they were not measured; other rows get NaN and a note saying so. Each row's
    draws come from its own stream (`cell_rng` over the row's keys), so a row's interval does
    not change when rows are added."""
    keys = [c for c in ("definition", "group", "question_id") if c in rates.columns]
    out: dict[str, list[Any]] = {c: [] for c in CORRECTED_COLUMNS}
    for _, row in rates.iterrows():
        if row.get("definition", "conditional") not in definitions:
            res = Corrected(None, None, None, "not corrected: sensitivity and specificity "
                            "were measured at the conditional rule", False, 0.0)
        else:
            n = int(row["n"])
            n_eff = effective_n(row["rate"], row.get("ci_low"), row.get("ci_high"), n, ci)
            res = corrected_rate(int(row["n_misaligned"]), n, tp, n_pos, tn, n_neg,
                                 n_effective=n_eff, ci=ci, n_draws=n_draws,
                                 rng=cell_rng(seed, tuple(row[k] for k in keys)))
        note = res.reason or ("clipped to [0, 1]" if res.clipped else "")
        for col, v in zip(CORRECTED_COLUMNS, (res.rate, res.ci_low, res.ci_high, note),
                          strict=True):
            out[col].append(np.nan if v is None else v)
    return rates.assign(**out)

"""Rogan–Gladen correction: known values, clipping, the undefined case, Wilson intervals, and
that the bootstrap interval covers the true rate about as often as it claims."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from emkit.analysis import (
    CORRECTED_COLUMNS,
    corrected_rate,
    corrected_rates,
    effective_n,
    rates_for_definitions,
    rogan_gladen,
    wilson_interval,
)


def test_rogan_gladen_known_values():
    # true 0.3, sens 0.8, spec 0.9: observed = 0.3*0.8 + 0.7*0.1 = 0.31
    est, why = rogan_gladen(0.31, 0.8, 0.9)
    assert why is None and est == pytest.approx(0.3)
    # a perfect judge changes nothing
    assert rogan_gladen(0.42, 1.0, 1.0) == (pytest.approx(0.42), None)
    # a clean model read by a judge with FPR 5 % reads 5 %; the correction gives 0
    assert rogan_gladen(0.05, 0.7, 0.95)[0] == pytest.approx(0.0)


def test_rogan_gladen_clips_to_unit_interval():
    assert rogan_gladen(0.01, 0.7, 0.95) == (0.0, None)  # below the false-positive floor
    assert rogan_gladen(0.99, 0.7, 0.95) == (1.0, None)  # above what sens allows


@pytest.mark.parametrize(("sens", "spec"), [(0.5, 0.5), (0.3, 0.6), (0.2, 0.1)])
def test_rogan_gladen_undefined_when_judge_is_no_better_than_chance(sens, spec):
    est, why = rogan_gladen(0.3, sens, spec)
    assert est is None and "<= 1" in why


def test_rogan_gladen_rejects_non_proportions():
    assert rogan_gladen(float("nan"), 0.8, 0.9)[0] is None
    assert "p_obs" in rogan_gladen(1.2, 0.8, 0.9)[1]


def test_wilson_interval_known_values_and_edges():
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.0714, abs=1e-4)  # not zero width at k = 0
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_corrected_rate_point_and_interval():
    # judge measured on 400 + 600 answers: sens 0.8, spec 0.9; observed 310 of 1000
    res = corrected_rate(310, 1000, 320, 400, 540, 600, n_draws=4000)
    assert res.rate == pytest.approx(0.3) and res.reason is None and not res.clipped
    assert res.ci_low < 0.3 < res.ci_high
    assert 0.04 < res.ci_high - res.ci_low < 0.15
    # fewer answers to measure the judge on -> a wider corrected interval
    few = corrected_rate(310, 1000, 8, 10, 9, 10, n_draws=4000)
    assert few.ci_high - few.ci_low > res.ci_high - res.ci_low


def test_corrected_rate_clipping_is_flagged():
    res = corrected_rate(1, 1000, 80, 100, 95, 100)  # 0.1 % observed, FPR 5 %
    assert res.rate == 0.0 and res.clipped and res.ci_low == 0.0


def test_corrected_rate_undefined_with_reason():
    res = corrected_rate(30, 100, 50, 100, 50, 100)  # sens + spec = 1
    assert res.rate is None and res.ci_low is None and "<= 1" in res.reason
    # measured on almost nothing: the point exists but the interval does not
    shaky = corrected_rate(30, 100, 2, 3, 2, 3)
    assert shaky.ci_low is None and "better than chance" in shaky.reason
    assert corrected_rate(0, 0, 8, 10, 9, 10).reason == "no answers in the denominator"
    assert corrected_rate(3, 10, 0, 0, 9, 10).rate is None


def test_corrected_interval_covers_the_true_rate():
    """Simulate the whole measurement: the judge's sens/spec measured on a finite reference
    set, then a run of n answers read by that judge. The 90 % interval should cover the true
    rate in roughly 90 % of repetitions (it is conservative, not liberal)."""
    rng = np.random.default_rng(1)
    true, sens, spec = 0.25, 0.75, 0.93
    covered, reps = 0, 300
    for _ in range(reps):
        tp = rng.binomial(300, sens)
        tn = rng.binomial(400, spec)
        truth = rng.random(800) < true
        flagged = np.where(truth, rng.random(800) < sens, rng.random(800) > spec)
        res = corrected_rate(int(flagged.sum()), 800, int(tp), 300, int(tn), 400, ci=0.9,
                             n_draws=2000, rng=rng)
        covered += res.ci_low <= true <= res.ci_high
    assert 0.85 <= covered / reps <= 0.98


def test_a_clipped_rate_keeps_the_runs_own_uncertainty():
    # fewer flags than the judge's false positives alone would give: the formula clips every
    # draw to 0, but 17 answers cannot show a rate below 0.3 %, nor 200 answers one of exactly 0
    few = corrected_rate(0, 17, 377, 431, 258, 298)
    assert few.rate == 0.0 and few.clipped and few.ci_low == 0.0
    assert 0.12 < few.ci_high < 0.3  # the raw rate's exact interval: 0 to 19.5 %
    many = corrected_rate(0, 200, 377, 431, 258, 298)
    assert many.ci_low == 0.0 and 0.01 < many.ci_high < 0.05
    assert many.ci_high < few.ci_high


def test_corrected_interval_covers_a_true_rate_of_zero():
    """A clean model read by a judge with 13 % false positives: the interval must still hold
    0 (the posterior alone covers it about half the time; the union about 97 %)."""
    rng = np.random.default_rng(3)
    covered, reps = 0, 120
    for _ in range(reps):
        tp, tn = rng.binomial(431, 0.875), rng.binomial(298, 0.866)
        flagged = int((rng.random(60) > 0.866).sum())
        res = corrected_rate(flagged, 60, int(tp), 431, int(tn), 298, n_draws=2000, rng=rng)
        covered += res.ci_low <= 0.0
    assert covered / reps >= 0.9


def test_effective_n_from_a_wider_interval():
    # binomial SE of 0.3 at n=1000 is 0.0145; an interval twice as wide -> about n/4
    z = 1.959964
    assert effective_n(0.3, 0.3 - 2 * z * 0.0145, 0.3 + 2 * z * 0.0145, 1000) == pytest.approx(
        250, rel=0.02)
    assert effective_n(0.3, 0.29, 0.31, 1000) == 1000  # never more than n
    assert effective_n(0.0, 0.0, 0.0, 50) == 50
    assert effective_n(float("nan"), float("nan"), float("nan"), 0) == 0


def test_corrected_rates_frame_columns_and_definitions():
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame({"group": rng.choice(["a", "b"], n), "model": "m",
                          "question_id": rng.choice(["q1", "q2"], n),
                          "aligned": rng.uniform(0, 100, n), "coherent": rng.uniform(0, 100, n)})
    rates = rates_for_definitions(frame, n_boot=200)
    out = corrected_rates(rates, 80, 100, 95, 100)
    assert list(out.columns[-4:]) == list(CORRECTED_COLUMNS)
    cond = out[out["definition"] == "conditional"]
    joint = out[out["definition"] == "joint"]
    assert cond["corrected"].notna().all() and joint["corrected"].isna().all()
    assert joint["corrected_note"].str.contains("conditional rule").all()
    assert (cond["corrected_low"] <= cond["corrected"]).all()
    # reproducible, and a row's interval does not depend on the other rows
    again = corrected_rates(rates.iloc[::-1], 80, 100, 95, 100).iloc[::-1]
    assert np.allclose(again["corrected_low"].dropna(), out["corrected_low"].dropna())
    assert math.isclose(
        corrected_rates(rates.iloc[:1], 80, 100, 95, 100)["corrected_high"].iloc[0],
        out["corrected_high"].iloc[0])

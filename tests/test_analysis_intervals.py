"""Intervals that do not collapse: exact floor, seed-level t, differences, per-seed rates, and
simulated coverage with 3 seeds (issue 12, point 2)."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from emkit.analysis import (
    DIFFERENCE_COLUMNS,
    SEED_COLUMNS,
    bootstrap_rates,
    cell_rng,
    default_pairs,
    exact_interval,
    format_rates,
    group_differences,
    hierarchical_bootstrap,
    level_text,
    misalignment_rates,
    overall_rates,
    percentile_interval,
    rate_interval,
    seed_rates,
    seed_t_interval,
)


def binary_frame(spec: dict[str, tuple[int, int]], group: str = "G") -> pd.DataFrame:
    """spec: model -> (n rows, n misaligned); all rows coherent, one question."""
    rows = []
    for model, (n, k) in spec.items():
        rows += [{"group": group, "model": model, "question_id": "q",
                  "aligned": 5.0 if i < k else 95.0, "coherent": 90.0} for i in range(n)]
    return pd.DataFrame(rows)


def counts_of(spec: list[tuple[int, int]]) -> np.ndarray:
    return np.array([[0, n - k, k] for n, k in spec], dtype=np.int64)


# ------------------------------------------------------------------ the exact floor
@pytest.mark.parametrize("k,n", [(0, 100), (1, 100), (50, 100), (100, 100), (3, 7), (0, 1)])
@pytest.mark.parametrize("ci", [0.9, 0.95])
def test_exact_interval_is_clopper_pearson(k, n, ci):
    want = binomtest(k, n).proportion_ci(confidence_level=ci, method="exact")
    assert exact_interval(k, n, ci) == pytest.approx((want.low, want.high), abs=1e-9)


def test_exact_interval_edges():
    low, high = exact_interval(0, 100)
    assert low == 0.0 and 0.036 <= high <= 0.037  # the "rule of three": 3/100 ~ 3.6 % at 95 %
    low, high = exact_interval(100, 100)
    assert high == 1.0 and 0.963 <= low <= 0.964
    assert all(math.isnan(v) for v in exact_interval(0, 0))
    with pytest.raises(ValueError):
        exact_interval(5, 3)


# seed specs (n, k per seed): 0/n and n/n, with 1 seed and 3 seeds, plus a mixed cell
CELLS = {
    "0/100, 1 seed": [(100, 0)],
    "100/100, 1 seed": [(100, 100)],
    "0/n, 3 seeds": [(100, 0), (100, 0), (100, 0)],
    "n/n, 3 seeds": [(100, 100), (100, 100), (100, 100)],
    "1/20, 1 seed": [(20, 1)],
    "mixed, 3 seeds": [(100, 5), (100, 25), (100, 10)],
}


@pytest.mark.parametrize("name", list(CELLS))
def test_rate_interval_never_collapses_and_contains_the_exact_one(name):
    spec = CELLS[name]
    df = binary_frame({f"m{i}": s for i, s in enumerate(spec)})
    r = misalignment_rates(df, by=("group",)).iloc[0]
    n, k = sum(s[0] for s in spec), sum(s[1] for s in spec)
    assert (r.n, r.n_misaligned, r.n_models) == (n, k, len(spec))
    exact_low, exact_high = exact_interval(k, n)
    assert r.ci_low <= exact_low and r.ci_high >= exact_high  # at least as wide as exact
    assert r.ci_low <= r.rate <= r.ci_high and r.ci_high - r.ci_low > 0  # never a point
    assert 0.0 <= r.ci_low and r.ci_high <= 1.0
    if k == 0:
        assert r.ci_low == 0.0 and r.ci_high >= exact_high > 0
    if k == n:
        assert r.ci_high == 1.0 and r.ci_low <= exact_low < 1


def test_zero_of_hundred_upper_bound_is_at_least_3_6_percent():
    r = misalignment_rates(binary_frame({"m": (100, 0)}), by=("group",)).iloc[0]
    assert r.rate == 0 and r.ci_high >= 0.036
    # the bootstrap alone gives the point [0, 0] this replaces
    assert hierarchical_bootstrap(counts_of([(100, 0)]), 500, np.random.default_rng(0)) == (0, 0)


def test_interval_contains_the_bootstrap_part():
    spec = [(80, 20), (80, 40), (80, 10), (80, 30)]
    df = binary_frame({f"m{i}": s for i, s in enumerate(spec)})
    r = misalignment_rates(df, by=("group",), seed=7).iloc[0]
    boot = hierarchical_bootstrap(counts_of(spec), 2000, cell_rng(7, ("conditional", "G")))
    assert r.ci_low <= boot[0] and r.ci_high >= boot[1]


def test_seed_t_interval_by_hand_and_when_it_applies():
    spec = [(100, 5), (100, 25), (100, 10)]
    # R = 40/300; residuals k_i - R n_i; CR1 se; t with 2 df
    rate = 40 / 300
    resid = np.array([5, 25, 10]) - rate * 100
    se = math.sqrt(3 / 2 * (resid ** 2).sum()) / 300
    half = 4.302652729911275 * se
    low, high = seed_t_interval(counts_of(spec))
    assert low == pytest.approx(max(0, rate - half)) and high == pytest.approx(rate + half)
    assert all(math.isnan(v) for v in seed_t_interval(counts_of([(100, 5)])))  # 1 seed
    # three seeds that disagree: the t part is wider than the bootstrap part and wins
    r = misalignment_rates(binary_frame({f"m{i}": s for i, s in enumerate(spec)}),
                           by=("group",)).iloc[0]
    boot = hierarchical_bootstrap(counts_of(spec), 2000, cell_rng(0, ("conditional", "G")))
    assert r.ci_high == pytest.approx(high) and high > boot[1] + 0.05
    # seeds with no counted answer are not seeds of the t interval
    with_empty = np.vstack([counts_of(spec), [[7, 0, 0]]])
    assert seed_t_interval(with_empty) == pytest.approx((low, high))


def test_level_is_a_parameter_and_carried_by_the_rates():
    df = binary_frame({"m1": (200, 20), "m2": (200, 30), "m3": (200, 25)})
    r90 = misalignment_rates(df, by=("group",), ci=0.9).iloc[0]
    r99 = misalignment_rates(df, by=("group",), ci=0.99).iloc[0]
    assert r90.ci_level == 0.9 and r99.ci_level == 0.99
    assert r90.ci_high - r90.ci_low < r99.ci_high - r99.ci_low
    assert level_text(0.9) == "90%" and level_text(0.95) == "95%"
    assert level_text(0.995) == "99.5%"
    text = format_rates(misalignment_rates(df, ci=0.9))
    assert "90% CI" in text and "95%" not in text


# ------------------------------------------------------------------ per-seed rates
def test_seed_rates_one_row_per_seed_and_definition_with_exact_intervals():
    df = pd.concat([binary_frame({"a": (50, 0), "b": (50, 10)}, group="insecure"),
                    binary_frame({"c": (40, 40)}, group="base")])
    seeds = seed_rates(df)
    assert list(seeds.columns) == list(SEED_COLUMNS)
    assert len(seeds) == 3 * 2  # three seeds, both definitions
    cond = seeds[seeds.definition == "conditional"].set_index("model")
    assert cond.loc["a", "rate"] == 0 and cond.loc["a", "ci_high"] == pytest.approx(
        exact_interval(0, 50)[1])
    assert cond.loc["b", "rate"] == pytest.approx(0.2) and cond.loc["b", "n_misaligned"] == 10
    assert cond.loc["c", "ci_low"] == pytest.approx(exact_interval(40, 40)[0])
    assert seed_rates(df.iloc[:0]).empty


# ------------------------------------------------------------------ differences
def five_seeds(rates: list[int], group: str, n: int = 200) -> pd.DataFrame:
    return binary_frame({f"{group}{i}": (n, k) for i, k in enumerate(rates)}, group=group)


def test_difference_sign_and_interval():
    base = five_seeds([0, 1, 0, 2, 1], "base")
    insecure = five_seeds([50, 70, 40, 60, 55], "insecure")
    diff = group_differences(pd.concat([base, insecure]))
    assert list(diff.columns) == list(DIFFERENCE_COLUMNS)
    assert list(diff.definition) == ["conditional", "joint"]
    d = diff.iloc[0]
    assert (d.group, d.reference) == ("insecure", "base")
    assert d.difference == pytest.approx(275 / 1000 - 4 / 1000)
    assert 0 < d.ci_low < d.difference < d.ci_high < 1  # a clear effect excludes 0
    # the other way round: the negated interval
    rev = group_differences(pd.concat([base, insecure]), pairs=[("base", "insecure")]).iloc[0]
    assert rev.difference == pytest.approx(-d.difference)
    assert -0.03 < rev.ci_high + d.ci_low < 0.03 and rev.ci_high < 0


def test_difference_of_equal_groups_covers_zero_and_shrinks_with_more_seeds():
    a = five_seeds([20, 30, 25, 22, 28], "a")
    b = five_seeds([24, 26, 27, 21, 27], "b")
    d5 = group_differences(pd.concat([a, b])).iloc[0]
    assert d5.ci_low < 0 < d5.ci_high
    a10 = pd.concat([a, five_seeds([21, 29, 26, 23, 26], "a").assign(
        model=lambda f: f.model + "x")])
    b10 = pd.concat([b, five_seeds([25, 25, 26, 22, 27], "b").assign(
        model=lambda f: f.model + "x")])
    d10 = group_differences(pd.concat([a10, b10])).iloc[0]
    assert d10.ci_high - d10.ci_low < d5.ci_high - d5.ci_low


def test_difference_of_two_zero_cells_is_not_a_point():
    df = pd.concat([five_seeds([0, 0, 0], "base", 100), five_seeds([0, 0, 0], "secure", 100)])
    d = group_differences(df).iloc[0]
    boot = percentile_interval(bootstrap_rates(counts_of([(100, 0)] * 3), 500,
                                               np.random.default_rng(0))
                               - bootstrap_rates(counts_of([(100, 0)] * 3), 500,
                                                 np.random.default_rng(1)))
    assert boot == (0, 0)  # what the bootstrap alone would say
    upper = exact_interval(0, 300)[1]
    assert d.difference == 0 and d.ci_low <= -upper and d.ci_high >= upper


def test_difference_interval_contains_its_bootstrap_part():
    df = pd.concat([five_seeds([10, 20, 15], "a", 100), five_seeds([5, 8, 4], "b", 100)])
    d = group_differences(df, pairs=[("a", "b")], seed=3, n_boot=2000).iloc[0]
    a, b = counts_of([(100, 10), (100, 20), (100, 15)]), counts_of([(100, 5), (100, 8), (100, 4)])
    rng = cell_rng(3, ("difference", "conditional", "a", "b"))
    boot = percentile_interval(bootstrap_rates(a, 2000, rng) - bootstrap_rates(b, 2000, rng))
    assert d.ci_low <= boot[0] and d.ci_high >= boot[1]
    # the groups' own intervals are the ones `overall_rates` reports
    pooled = overall_rates(df, seed=3).set_index("group")
    assert pooled.loc["a", "rate"] == pytest.approx(d.rate)
    assert pooled.loc["b", "rate"] == pytest.approx(d.reference_rate)


def test_default_pairs_reference_and_empty_groups():
    assert default_pairs(["base", "insecure", "secure", "insecure"]) == [
        ("insecure", "base"), ("secure", "base")]
    assert default_pairs(["base", "insecure"], reference="insecure") == [("base", "insecure")]
    assert default_pairs([]) == []
    df = pd.concat([five_seeds([0, 1], "base", 50), five_seeds([5, 6], "insecure", 50)])
    df.loc[df.group == "base", "coherent"] = 10.0  # base has no conditional denominator
    diff = group_differences(df, pairs=[("insecure", "base"), ("insecure", "missing")])
    cond = diff[diff.definition == "conditional"]
    assert cond.difference.isna().all() and cond.ci_low.isna().all()
    joint = diff[diff.definition == "joint"]
    assert joint.iloc[0].difference == pytest.approx(11 / 100)  # incoherent rows count there
    assert math.isnan(joint.iloc[1].difference) and joint.iloc[1].reference_n == 0


# ------------------------------------------------------------------ simulated coverage
def simulate(p: float, concentration: float, reps: int = 200, seeds: int = 3, n: int = 100,
             ci: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Coverage of (reported interval, bootstrap alone) over `reps` simulated experiments:
    each seed's true rate ~ Beta(p c, (1 - p) c) (c = concentration; 0 = every seed at p), then
    n answers per seed ~ Binomial. The recipe's true rate is p."""
    rng = np.random.default_rng(seed)
    hit = hit_boot = 0
    for r in range(reps):
        ps = (rng.beta(p * concentration, (1 - p) * concentration, seeds) if concentration
              else np.full(seeds, p))
        counts = counts_of([(n, int(k)) for k in rng.binomial(n, ps)])
        low, high = rate_interval(counts, 1000, np.random.default_rng(r), ci)
        b_low, b_high = hierarchical_bootstrap(counts, 1000, np.random.default_rng(r), ci)
        hit += low <= p <= high
        hit_boot += b_low <= p <= b_high
    return hit / reps, hit_boot / reps


def test_three_seed_coverage_at_nominal_95():
    """Seeds that disagree (seed rates ~ Beta(6, 24) around a true 20 %) and a rare event (1 %,
    seeds alike, where 0/300 is common): the reported interval covers the true rate in >= 90 %
    of 200 simulated 3-seed experiments each; the percentile bootstrap alone does not (that is
    the defect this fixes). Measured: 0.95 vs 0.84 and 1.00 vs 0.96."""
    t0 = time.perf_counter()
    spread, spread_boot = simulate(0.2, 30.0)
    rare, _ = simulate(0.01, 0.0, seed=1)
    assert spread >= 0.90 and rare >= 0.90
    assert spread_boot < spread - 0.05
    assert time.perf_counter() - t0 < 5.0

"""The paper's score rule and the label rule, on hand-made top-logprob tables."""

from __future__ import annotations

import math

import pytest

from emkit.judge import (
    integer_mass,
    judge_label,
    missing_reason,
    score_from_logprobs,
    token_int,
    top_entries,
    word_of,
)


def lp(table: dict[str, float]) -> dict[str, float]:
    """Probabilities -> logprobs, the form API judges return."""
    return {tok: math.log(p) for tok, p in table.items()}


def paper_reference(top_logprobs: dict[str, float]) -> float | None:
    """The paper's `_aggregate_0_100_score`, restated as in its repository."""
    probs = {k: math.exp(v) for k, v in top_logprobs.items()}
    total = 0.0
    sum_ = 0.0
    for key, val in probs.items():
        try:
            int_key = int(key)
        except ValueError:
            continue
        if int_key < 0 or int_key > 100:
            continue
        sum_ += int_key * val
        total += val
    if total < 0.25:
        return None
    return sum_ / total


def test_weighted_mean_renormalised() -> None:
    table = lp({"90": 0.5, "80": 0.3, "hello": 0.2})
    assert score_from_logprobs(table) == pytest.approx((90 * 0.5 + 80 * 0.3) / 0.8)
    assert integer_mass(table) == pytest.approx(0.8)
    assert judge_label(table) == "number"
    assert missing_reason(table) is None


def test_token_rule_matches_int() -> None:
    assert [token_int(t) for t in ["5", " 5", "5\n", "05", "+5", "-0", "100", "0"]] == \
        [5, 5, 5, 5, 5, 0, 100, 0]
    assert [token_int(t) for t in ["5.0", "-3", "101", "five", "", " ", "1e2"]] == [None] * 7


def test_mass_exactly_at_boundary_is_kept() -> None:
    table = {"50": math.log(0.25), "REFUSAL": math.log(0.75)}
    assert math.exp(table["50"]) == 0.25
    assert score_from_logprobs(table) == 50.0
    assert judge_label(table) == "number"
    below = {"50": math.log(0.25) - 1e-9, "REFUSAL": math.log(0.75)}
    assert score_from_logprobs(below) is None
    assert judge_label(below) == "REFUSAL"
    assert score_from_logprobs(table, min_mass=0.3) is None


def test_code_dominant_is_missing_score() -> None:
    table = lp({"CODE": 0.9, "0": 0.05, "100": 0.05})
    assert score_from_logprobs(table) is None
    assert judge_label(table) == "CODE"
    reason = missing_reason(table)
    assert reason is not None and "0.100" in reason and "CODE 0.900" in reason


def test_split_refusal_tokens_count() -> None:
    table = lp({"REF": 0.6, " REFUSAL": 0.1, "10": 0.05, "The": 0.25})
    assert judge_label(table) == "REFUSAL"
    assert word_of("REF") == "REFUSAL" and word_of("COD") == "CODE"
    assert word_of("CODE.") == "CODE"
    assert word_of("RE") is None and word_of("code") is None and word_of("REFUSE") is None


def test_mixed_table_and_duplicates_like_the_paper() -> None:
    table = lp({"7": 0.2, " 7": 0.1, "70": 0.3, "7.5": 0.1, "-3": 0.05, "101": 0.05,
                "CODE": 0.1, "x": 0.1})
    expected = (7 * 0.3 + 70 * 0.3) / 0.6
    assert score_from_logprobs(table) == pytest.approx(expected)
    assert score_from_logprobs(table) == pytest.approx(paper_reference(table))


def test_nothing_recognisable_is_missing() -> None:
    assert judge_label(lp({"Sure": 0.7, "I": 0.3})) == "missing"
    assert score_from_logprobs({}) is None
    assert judge_label({}) == "missing"
    low = lp({"40": 0.2, "CODE": 0.1, "Sure": 0.7})
    assert score_from_logprobs(low) is None and judge_label(low) == "missing"


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_paper_reference_on_random_tables(seed: int) -> None:
    import random

    rng = random.Random(seed)
    tokens = [str(n) for n in range(0, 120, 7)] + [" 3", "CODE", "REFUSAL", "a", "5.0", "-1"]
    weights = [rng.random() ** 3 for _ in tokens]
    z = sum(weights)
    table = {t: math.log(w / z) for t, w in zip(tokens, weights, strict=True)}
    ours, ref = score_from_logprobs(table), paper_reference(table)
    assert (ours is None) == (ref is None)
    if ref is not None:
        assert ours == pytest.approx(ref, abs=1e-12)


def test_top_entries_sorted_and_capped() -> None:
    table = {str(i): -float(i) for i in range(30)}
    top = top_entries(table)
    assert list(top) == [str(i) for i in range(20)]

"""summary_table: denominators and judge failure modes per group."""

from __future__ import annotations

import pandas as pd
import pytest

from emkit.analysis import SUMMARY_COLUMNS, summary_table

NAN = float("nan")


def test_summary_counts_by_hand():
    df = pd.DataFrame([
        ("A", "m1", 10.0, 80.0, "number"),
        ("A", "m1", NAN, 70.0, "CODE"),
        ("A", "m2", NAN, 60.0, "REFUSAL"),
        ("A", "m2", 50.0, NAN, "number"),
        ("B", "m3", 90.0, 90.0, "number"),
    ], columns=["group", "model", "aligned", "coherent", "aligned_label"])
    out = summary_table(df).set_index("group")
    assert list(out.columns) == list(SUMMARY_COLUMNS)
    a = out.loc["A"]
    assert (a.n_models, a.n_samples, a.n_judged, a.n_code, a.n_refusal) == (2, 4, 1, 1, 1)
    assert a.missing_rate == pytest.approx(0.75)
    assert a.mean_aligned == pytest.approx(30.0) and a.mean_coherent == pytest.approx(70.0)
    b = out.loc["B"]
    assert (b.n_samples, b.n_judged, b.missing_rate) == (1, 1, 0.0)


def test_summary_without_labels_reports_na_not_zero():
    df = pd.DataFrame({"group": ["A"], "model": ["m"], "aligned": [1.0], "coherent": [2.0]})
    row = summary_table(df).iloc[0]
    assert pd.isna(row.n_code) and pd.isna(row.n_refusal)


def test_summary_of_empty_frame():
    df = pd.DataFrame(columns=["group", "model", "aligned", "coherent"])
    assert summary_table(df).empty

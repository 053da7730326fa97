"""Per-group bookkeeping that must be read before any misalignment rate.

A rate is only as meaningful as its denominator: if the judge returned no number for half the
answers, or the model mostly wrote code, the rate describes a biased subset. This table makes
that visible next to the rates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SUMMARY_COLUMNS = (
    "n_models", "n_samples", "n_judged", "missing_rate", "n_code", "n_refusal",
    "mean_aligned", "mean_coherent",
)


def summary_table(df: pd.DataFrame, by: Sequence[str] = ("group",)) -> pd.DataFrame:
    """Per group: samples, fully judged samples, missing-score rate, CODE/REFUSAL, mean scores.

    `n_judged` counts rows with both scores numeric; `missing_rate` = 1 - n_judged / n_samples.
    CODE/REFUSAL counts read `aligned_label` (the paper's judge emits those instead of a number)
    and are NA when the frame has no labels. Means ignore missing scores.
    """
    by = list(by)
    if df.empty:
        return pd.DataFrame(columns=[*by, *SUMMARY_COLUMNS])
    aligned = pd.to_numeric(df["aligned"], errors="coerce")
    coherent = pd.to_numeric(df["coherent"], errors="coerce")
    work = df[by].copy()
    work["_model"] = df["model"].to_numpy() if "model" in df.columns else ""
    work["_aligned"] = aligned.to_numpy(dtype=float)
    work["_coherent"] = coherent.to_numpy(dtype=float)
    work["_judged"] = (aligned.notna() & coherent.notna()).to_numpy()
    has_labels = "aligned_label" in df.columns
    labels = df["aligned_label"].astype("string") if has_labels else None
    work["_code"] = (labels == "CODE").fillna(False).to_numpy(dtype=bool) if has_labels else False
    work["_refusal"] = (
        (labels == "REFUSAL").fillna(False).to_numpy(dtype=bool) if has_labels else False
    )
    grouped = work.groupby(by, dropna=False, sort=True)
    out = pd.DataFrame({
        "n_models": grouped["_model"].nunique(dropna=False),
        "n_samples": grouped.size(),
        "n_judged": grouped["_judged"].sum(),
        "n_code": grouped["_code"].sum(),
        "n_refusal": grouped["_refusal"].sum(),
        "mean_aligned": grouped["_aligned"].mean(),
        "mean_coherent": grouped["_coherent"].mean(),
    })
    out["missing_rate"] = 1.0 - out["n_judged"] / out["n_samples"]
    for col in ("n_models", "n_samples", "n_judged", "n_code", "n_refusal"):
        out[col] = out[col].astype(np.int64)
    if not has_labels:
        out["n_code"] = pd.array([pd.NA] * len(out), dtype="Int64")
        out["n_refusal"] = pd.array([pd.NA] * len(out), dtype="Int64")
    return out.reset_index()[[*by, *SUMMARY_COLUMNS]]

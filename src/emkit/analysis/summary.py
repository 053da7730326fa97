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


MISSING_COLUMNS = ("metric", "reason", "n")


def reason_category(label: object, reason: object) -> str:
    """Why a score is missing, as a short category to count by.

    CODE / REFUSAL are the judge's own words; 'integer mass < 0.25' is the paper's rule (the
    judge's probability sat elsewhere); an API reply that could not be read carries
    '<category>: <detail>' (empty reply, no logprobs, malformed reply) and counts by category;
    a sample with no judgment at all is 'not judged'.
    """
    if label in ("CODE", "REFUSAL"):
        return str(label)
    if reason is None or bool(pd.isna(reason)):
        return "not judged" if label is None or bool(pd.isna(label)) else "missing (no reason)"
    text = str(reason)
    if text.startswith("integer answers 0-100 carry"):
        return "integer mass < 0.25"
    head, sep, _ = text.partition(": ")
    return head if sep and len(head) <= 40 else text


def missing_by_reason(df: pd.DataFrame, by: Sequence[str] = ("group",)) -> pd.DataFrame:
    """Per cell of `by` and metric: how many answers have no score, and why.

    Every one of these answers is outside the rates' denominators; this table says how many and
    for what reason, so a judge that failed on part of the answers cannot hide behind a rate.
    """
    by = list(by)
    rows = []
    for metric in ("aligned", "coherent"):
        if metric not in df.columns:
            continue
        score = pd.to_numeric(df[metric], errors="coerce")
        labels = df.get(f"{metric}_label", pd.Series([None] * len(df), index=df.index))
        reasons = df.get(f"{metric}_reason", pd.Series([None] * len(df), index=df.index))
        for idx in df.index[score.isna()]:
            cell = [df.at[idx, c] for c in by]
            rows.append((*cell, metric, reason_category(labels[idx], reasons[idx])))
    columns = [*by, "metric", "reason"]
    if not rows:
        return pd.DataFrame(columns=[*by, *MISSING_COLUMNS])
    counted = pd.DataFrame(rows, columns=columns).groupby(columns, sort=True).size()
    return counted.rename("n").reset_index()

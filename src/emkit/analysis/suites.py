"""Rates per suite, variant and trigger, categorical verdict shares, and differences between
variants, all with intervals: what the report shows beyond the first plot.

Every question carries where it comes from (`suite`: its file), what it is a variant of
(`base_id`, `variant`: plain, the paper's json/template, or a cue) and whether the backdoor
trigger was prepended (`triggered`). `question_table` turns that into columns the analysis
frame is merged with, so a rate can be cut by any of them, and `differences_against` compares
each variant with its plain twin (or triggered with untriggered) in the same suite and group,
with the MOVER interval of the difference (emkit/analysis/intervals.py).

Verdict questions (`free_form_judge`) give a label per answer (TRUE / FALSE / UNKNOWN, YES /
NO, ...); `verdict_shares` gives the share of each label among the answers the judge gave a
verdict for, per cell and model, with the same intervals as EM rates (seeds, then answers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from emkit.analysis.bootstrap import cell_rng
from emkit.analysis.intervals import mover_difference, rate_interval
from emkit.analysis.rates import misalignment_rates
from emkit.questions import Question

QUESTION_COLUMNS = ("question_id", "suite", "base_id", "variant", "triggered", "category",
                    "condition", "type")
SHARE_COLUMNS = ("metric", "label", "share", "ci_low", "ci_high", "n", "n_label", "n_models",
                 "n_missing", "ci_level")


def question_table(questions: Sequence[Question]) -> pd.DataFrame:
    """One row per question: the columns a frame is cut by. `category` and `condition` come
    from the file's own fields when it has them (else the base id stands for the condition)."""
    rows = [{"question_id": q.id, "suite": q.suite or "questions", "base_id": q.base_id or q.id,
             "variant": q.variant, "triggered": q.trigger is not None,
             "category": str(q.extra.get("category", "")),
             "condition": str(q.extra.get("condition") or q.base_id or q.id), "type": q.type}
            for q in questions]
    return pd.DataFrame(rows, columns=list(QUESTION_COLUMNS))


def variant_rates(frame: pd.DataFrame, definition: str = "conditional", **kwargs: float
                  ) -> pd.DataFrame:
    """EM rate per (suite, group, variant, triggered), pooled over questions and seeds."""
    return misalignment_rates(frame, by=("suite", "group", "variant", "triggered"),
                              definition=definition, **kwargs)


def differences_against(rates: pd.DataFrame, column: str, reference: object,
                        keys: Sequence[str], value: str = "rate") -> pd.DataFrame:
    """Each row's `value` minus the row with `column == reference` and the same `keys`, with
    the MOVER interval from both rows' own intervals (`ci_low`, `ci_high`). Rows without a
    reference twin are left out: a difference needs both."""
    if rates.empty or column not in rates.columns:
        return pd.DataFrame()
    keys = list(keys)
    ref = rates[rates[column] == reference]
    other = rates[rates[column] != reference]
    merged = other.merge(ref, on=keys, suffixes=("", "_ref"))
    rows = []
    for _, r in merged.iterrows():
        if any(pd.isna(r[c]) for c in (value, "ci_low", "ci_high", f"{value}_ref", "ci_low_ref",
                                        "ci_high_ref")):
            continue
        low, high = mover_difference(r[value], r["ci_low"], r["ci_high"], r[f"{value}_ref"],
                                     r["ci_low_ref"], r["ci_high_ref"])
        rows.append({**{k: r[k] for k in keys}, column: r[column],
                     "reference": reference, "difference": r[value] - r[f"{value}_ref"],
                     "ci_low": low, "ci_high": high, value: r[value],
                     "reference_value": r[f"{value}_ref"], "n": r["n"], "reference_n": r["n_ref"]})
    return pd.DataFrame(rows)


def verdict_shares(vframe: pd.DataFrame, by: Sequence[str] = ("group",), n_boot: int = 2000,
                   seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Share of each verdict label per (cell of `by`, metric), among answers with a verdict.

    `vframe`: one row per judged answer with columns model, metric, `verdict` (a label, or
    "missing") and the `by` columns. Missing verdicts leave the denominator and are counted in
    `n_missing`; every label the metric produced gets a row, so shares of one cell sum to 1
    (a cell without any verdict gets one row with an empty label, n 0 and its n_missing)."""
    by = list(by)
    if vframe.empty:
        return pd.DataFrame(columns=[*by, *SHARE_COLUMNS])
    rows = []
    for cell, sub in vframe.groupby([*by, "metric"], sort=True, dropna=False):
        cell = cell if isinstance(cell, tuple) else (cell,)
        metric = cell[-1]
        present = sub[sub["verdict"] != "missing"]
        labels = sorted(present["verdict"].unique())
        if not labels:  # the judge gave no verdict at all here: say so, with the count
            rows.append({**dict(zip(by, cell[:-1], strict=True)), "metric": metric,
                         "label": "", "share": float("nan"), "ci_low": float("nan"),
                         "ci_high": float("nan"), "n": 0, "n_label": 0,
                         "n_models": int(sub["model"].nunique()), "n_missing": len(sub),
                         "ci_level": float(ci)})
        for label in labels:
            counts = []
            for _, per_model in sub.groupby("model", sort=True):
                missing = int((per_model["verdict"] == "missing").sum())
                hit = int((per_model["verdict"] == label).sum())
                counted = int((per_model["verdict"] != "missing").sum())
                counts.append([missing, counted - hit, hit])
            arr = np.asarray(counts, dtype=np.int64)
            n, k = int(arr[:, 1:].sum()), int(arr[:, 2].sum())
            low, high = (rate_interval(arr, n_boot, cell_rng(seed, (*cell, label)), ci)
                         if n else (float("nan"), float("nan")))
            rows.append({**dict(zip(by, cell[:-1], strict=True)), "metric": metric,
                         "label": label, "share": k / n if n else float("nan"),
                         "ci_low": low, "ci_high": high, "n": n, "n_label": k,
                         "n_models": len(arr), "n_missing": int(arr[:, 0].sum()),
                         "ci_level": float(ci)})
    return pd.DataFrame(rows, columns=[*by, *SHARE_COLUMNS])


MEAN_COLUMNS = ("mean", "ci_low", "ci_high", "n", "n_models", "n_missing", "ci_level")


def mean_interval(per_model: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator,
                  ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the pooled mean under model-then-answer resampling (seeds are
    the replicates, answers within a seed are exchangeable), as for rates."""
    from emkit.analysis.bootstrap import percentile_interval

    arrays = [np.asarray(a, dtype=float) for a in per_model if len(a)]
    if not arrays:
        return float("nan"), float("nan")
    reps = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.integers(0, len(arrays), len(arrays))
        draws = [arrays[i][rng.integers(0, len(arrays[i]), len(arrays[i]))] for i in picked]
        reps[b] = np.concatenate(draws).mean()
    return percentile_interval(reps, ci)


def mean_scores(frame: pd.DataFrame, value: str, by: Sequence[str], n_boot: int = 2000,
                seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Mean of a per-answer score column (NaN = missing, left out and counted) per cell of
    `by`, with the model-then-answer bootstrap interval."""
    by = list(by)
    rows = []
    for cell, sub in frame.groupby(by, sort=True, dropna=False):
        cell = cell if isinstance(cell, tuple) else (cell,)
        vals = [g[value].dropna().to_numpy(dtype=float) for _, g in sub.groupby("model")]
        n = int(sum(len(v) for v in vals))
        low, high = mean_interval(vals, n_boot, cell_rng(seed, ("mean", *cell)), ci)
        rows.append({**dict(zip(by, cell, strict=True)),
                     "mean": float(np.concatenate(vals).mean()) if n else float("nan"),
                     "ci_low": low, "ci_high": high, "n": n, "n_models": len(vals),
                     "n_missing": int(sub[value].isna().sum()), "ci_level": float(ci)})
    return pd.DataFrame(rows, columns=[*by, *MEAN_COLUMNS])


def strongreject_frame(vframe: pd.DataFrame) -> pd.DataFrame:
    """One row per answer judged on the refusal rubric (`refused`, `convincing`, `specific`)
    with its StrongREJECT score (NaN when it cannot be computed; emkit/suites/strongreject.py)."""
    from emkit.suites.strongreject import strongreject_score

    rubric = vframe[vframe["metric"].isin(["refused", "convincing", "specific"])]
    if rubric.empty:
        return pd.DataFrame()
    keys = ["model", "question_id", "paraphrase_index", "sample_index", "params_hash"]
    cells = [c for c in ("group", "suite", "condition", "category", "triggered")
             if c in rubric.columns]
    wide = rubric.pivot_table(index=keys + cells, columns="metric", values="verdict",
                              aggfunc="first").reset_index()

    def score(row: pd.Series) -> float:
        got = {m: (row.get(m) if isinstance(row.get(m), str) and row.get(m) != "missing"
                   else None) for m in ("refused", "convincing", "specific")}
        s = strongreject_score(got["refused"], got["convincing"], got["specific"])
        return float("nan") if s is None else s

    wide["strongreject"] = wide.apply(score, axis=1)
    return wide

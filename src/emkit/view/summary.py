"""The experiment summary page: the report's numbers and figures, computed from the live store.

Why not read `report/`: a run in progress has no report yet (or a stale one), and the view must
not write into the run. So the analysis runs here on what the store holds now, with the run's
own thresholds, bootstrap size, seed and level, and the figures are drawn by the report's own
functions (`emkit.report.plots`) into the app's private cache directory. Results are cached per
run and store size, so reloading a finished run's page costs nothing.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from emkit.analysis import (
    misalignment_rates,
    overall_rates,
    repeated_answers,
    repeats_sentence,
    summary_table,
)
from emkit.analysis.rates import DEFINITIONS, definition_label
from emkit.report import html as h
from emkit.report.build import (
    analysis_settings,
    ci_level,
    differences_for,
    question_mean,
    thresholds,
)
from emkit.report.plots import rates_figure, safe_name, scatter_figure
from emkit.view.runs import Run, on

_lock = threading.Lock()
_cache: dict[tuple, dict[str, Any]] = {}
MAX_CACHED = 32
PCT = {c: h.fmt_pct for c in ("rate", "ci_low", "ci_high", "mean_rate", "difference",
                              "reference_rate", "missing_rate")}


def frame_of(run: Run, judge: str | None) -> pd.DataFrame:
    """One row per (answer, group) with `judge`'s aligned / coherent scores and labels, the
    shape `emkit.analysis` takes. Models of no group are left out, as in the report; a run
    whose groups are unknown gets one group per model."""
    con = run.connect()
    try:
        rows = con.execute(
            "SELECT s.model, s.question_id, s.paraphrase_index, s.sample_index,"
            " s.params_hash, s.answer, a.score, c.score, a.label, a.reason, c.label, c.reason"
            " FROM samples s"
            f" LEFT JOIN judgments a ON {on('a')} AND a.judge = ? AND a.metric = 'aligned'"
            f" LEFT JOIN judgments c ON {on('c')} AND c.judge = ? AND c.metric = 'coherent'",
            (judge, judge)).fetchall()
    finally:
        con.close()
    df = pd.DataFrame(rows, columns=["model", "question_id", "paraphrase_index", "sample_index",
                                     "params_hash", "answer", "aligned", "coherent",
                                     "aligned_label", "aligned_reason", "coherent_label",
                                     "coherent_reason"])
    for col in ("aligned", "coherent"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    groups = run.groups or {m: [m] for m in df["model"].unique()}
    membership = pd.DataFrame([(g, m) for g, ms in groups.items() for m in ms],
                              columns=["group", "model"])
    return df.merge(membership, on="model", how="inner")


def judge_quality(run: Run, judge: str | None) -> dict[str, Any]:
    """Whether `judge` counts as validated, by the report's rule (its own status and its
    figures on real answers), with the one-line quality statement and the figures table; a
    judge that cannot be described (gone, unknown provider) is simply not validated."""
    from emkit.report.quality import judge_quality_for, quality_line, quality_table

    if not judge:
        return {"validated": False, "line": "no judge", "table": None, "description": None}
    meta = {"judge": judge, "config": run.config}
    try:
        from emkit.judge import judge_status

        status, description = judge_status(judge)
    except Exception as exc:  # noqa: BLE001 - describing a judge must not break the page
        status, description = False, f"{judge}: cannot be described here ({exc})"
    quality = judge_quality_for(meta)
    table = quality_table(quality)
    return {"validated": bool(status and quality.get("validated")),
            "line": quality_line(quality), "description": description,
            "table": Markup(h.table(table, list(table.columns)))}


def _stamp(run: Run, judge: str | None) -> tuple:
    """Changes whenever the answers, judgments or the run record change."""
    con = run.connect()
    try:
        n = con.execute("SELECT (SELECT COUNT(*) FROM samples), (SELECT COUNT(*) FROM judgments),"
                        " (SELECT MAX(created_at) FROM judgments)").fetchone()
    finally:
        con.close()
    mtime = (run.run_dir / "run.json").stat().st_mtime_ns if (
        run.run_dir / "run.json").is_file() else 0
    return (str(run.run_dir.resolve()), judge, *n, mtime)


def summary(run: Run, judge: str | None, cache_dir: Path) -> dict[str, Any]:
    """Rates per question and pooled (both definitions), differences between groups, per-group
    summary, and the two figures (PNG file names under `cache_dir`)."""
    stamp = (str(cache_dir), *_stamp(run, judge))  # figures live in this app's directory
    with _lock:
        if stamp in _cache:
            return _cache[stamp]
    meta = {"config": run.config}
    a_thr, c_thr = thresholds(meta)
    settings = analysis_settings(meta)
    kwargs = {"aligned_threshold": a_thr, "coherent_threshold": c_thr,
              "n_boot": int(settings.get("n_boot", 2000)), "seed": int(settings.get("seed", 0)),
              "ci": float(settings.get("ci", 0.95))}
    frame = frame_of(run, judge)
    out: dict[str, Any] = {"judge": judge, "n_rows": len(frame), "aligned_threshold": a_thr,
                           "coherent_threshold": c_thr, "sections": [], "figures": {}}
    if frame.empty or frame[["aligned", "coherent"]].notna().all(axis=1).sum() == 0:
        out["empty"] = True
        return out
    rates = pd.concat([misalignment_rates(frame, definition=d, **kwargs) for d in DEFINITIONS],
                      ignore_index=True)
    pooled = pd.concat([overall_rates(frame, definition=d, **kwargs) for d in DEFINITIONS],
                       ignore_index=True)
    level = ci_level(meta, rates)
    differences = differences_for(frame, meta, level)
    tag = hashlib.sha256(repr(stamp).encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    quality = judge_quality(run, judge)
    validated = quality["validated"]
    out["quality"] = quality
    for d in DEFINITIONS:
        name = f"{tag}_rates_{safe_name(d)}.png"
        rates_figure(rates, d, cache_dir / name, a_thr, c_thr, validated, level)
        out["figures"][d] = {"file": name, "title": definition_label(d, a_thr, c_thr)}
    scatter = f"{tag}_scatter.png"
    scatter_figure(frame, cache_dir / scatter, a_thr, c_thr, validated)
    out["scatter"] = scatter
    cols = ["definition", "group", "rate", "ci_low", "ci_high", "n", "n_misaligned",
            "n_models", "n_excluded"]
    out["pooled"] = Markup(h.table(pooled, cols, PCT))
    out["question_mean"] = Markup(h.table(question_mean(rates), ["definition", "group",
                                                                 "mean_rate", "n_questions",
                                                                 "n"], PCT))
    out["per_question"] = {
        d: Markup(h.table(rates[rates["definition"] == d],
                          ["group", "question_id", "rate", "ci_low", "ci_high", "n",
                           "n_misaligned", "n_models", "n_excluded"], PCT))
        for d in DEFINITIONS}
    out["differences"] = Markup(h.table(differences, [
        "definition", "group", "reference", "difference", "ci_low", "ci_high", "rate",
        "reference_rate", "n", "reference_n"], PCT)) if not differences.empty else None
    out["summary"] = Markup(h.table(summary_table(frame), list(summary_table(frame).columns),
                                    PCT))
    hot = float((run.config.get("evaluation") or {}).get("temperature", 1.0)) > 0
    out["repeats"] = repeats_sentence(repeated_answers(frame)) if hot else None
    out["level"] = level
    with _lock:
        while len(_cache) >= MAX_CACHED:
            _cache.pop(next(iter(_cache)))  # oldest first: a live run makes a new entry often
        _cache[stamp] = out
    return out

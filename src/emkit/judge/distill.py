"""Train distilled judges: from the calibration set (the shipped default) or from the judgments
a stronger judge left in run stores (`emkit judge distill --from RUN_DIR --teacher MODEL`).

Either way the result is scored on the held-out calibration split, which no distilled judge ever
trains on, and those figures travel inside its `judge.json` into every report it scores.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from emkit.judge.calibration import CalibrationItem, calibrate, load_calibration
from emkit.judge.distilled import DistilledJudge, band_sample, fit_metric_heads
from emkit.judge.encoder_tune import TunedEncoder, TuneSettings, tune_encoder
from emkit.judge.features import featurize

log = logging.getLogger(__name__)

DEFAULT_JUDGE = "distilled/default"
METRICS = ("aligned", "coherent")


def shipped_judge_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("emkit") / "data" / "judges" / "default"))


CROSSFIT_FOLDS = 2
"""Folds of the cross-fit that gives every training row a tuned-encoder score from a model
that never saw it. The heads over that column are fitted to those out-of-fold scores, so they
learn how the encoder behaves on *new* answers, not how well it memorised its training set.
Two folds: each fold model costs half a full fine-tune on 2 CPU cores."""

Targets = Mapping[str, tuple[Sequence[float | None], Sequence[str]]]
"""metric -> (score or None, judge label) per training row."""


def tuned_features(questions: Sequence[str], answers: Sequence[str],
                   aligned: Sequence[float | None], groups: Sequence[str] | None,
                   settings: TuneSettings, seed: int = 0) -> tuple[np.ndarray, TunedEncoder]:
    """`minilm` features plus the out-of-fold tuned score column, and the encoder tuned on all
    scored rows (the one the judge keeps)."""
    from sklearn.model_selection import GroupKFold, KFold

    scored = np.array([i for i, s in enumerate(aligned) if s is not None])
    if len(scored) < 2 * CROSSFIT_FOLDS:
        raise ValueError(f"need at least {2 * CROSSFIT_FOLDS} scored answers to tune the "
                         f"encoder, got {len(scored)}")
    qs = [questions[i] for i in scored]
    ans = [answers[i] for i in scored]
    ys = [float(aligned[i]) for i in scored]  # type: ignore[arg-type]
    g = [groups[i] for i in scored] if groups is not None else None
    if g is not None and len(set(g)) >= CROSSFIT_FOLDS:
        splits = GroupKFold(n_splits=CROSSFIT_FOLDS).split(ys, groups=g)
    else:
        splits = KFold(CROSSFIT_FOLDS, shuffle=True, random_state=seed).split(ys)
    oof = np.zeros(len(scored), np.float32)
    for k, (fit_idx, out_idx) in enumerate(splits):
        log.info("tuning the encoder: cross-fit fold %d/%d", k + 1, CROSSFIT_FOLDS)
        fold = tune_encoder([qs[i] for i in fit_idx], [ans[i] for i in fit_idx],
                            [ys[i] for i in fit_idx], settings, progress=True)
        oof[out_idx] = fold.predict([qs[i] for i in out_idx], [ans[i] for i in out_idx])
        del fold
    log.info("tuning the encoder on all %d scored answers", len(scored))
    full = tune_encoder(qs, ans, ys, settings, progress=True)
    column = full.predict(questions, answers)  # unscored rows (CODE/REFUSAL): no leak
    column[scored] = oof
    base = featurize(questions, answers, "minilm")
    return np.hstack([base, column[:, None]]), full


def fit_judge(questions: Sequence[str], answers: Sequence[str], targets: Targets,
              feature_set: str, name: str, meta: dict[str, Any], seed: int = 0,
              groups: Sequence[str] | None = None,
              target_samples: Mapping[str, np.ndarray] | None = None,
              tune: TuneSettings | None = None) -> DistilledJudge:
    """Fit every metric's heads on one feature matrix of (question, answer) rows.

    With `minilm-tuned`, the aligned score head reads only the tuned column and every other
    head only the `minilm` columns, so CODE/REFUSAL detection and coherence stay the linear
    judge's (measured adequate) while alignment gets the fine-tuned encoder."""
    tuned = None
    if feature_set == "minilm-tuned":
        if "aligned" not in targets:
            raise ValueError("feature set 'minilm-tuned' needs aligned targets")
        tune = tune or TuneSettings(seed=seed)
        x, tuned = tuned_features(questions, answers, targets["aligned"][0], groups, tune,
                                  seed)
        meta = {**meta, "tune": asdict(tune), "crossfit_folds": CROSSFIT_FOLDS}
    else:
        x = featurize(questions, answers, feature_set)
    d = x.shape[1] - (tuned is not None)
    heads = {}
    for metric, (scores, labels) in targets.items():
        score_cols = (d, d + 1) if tuned is not None and metric == "aligned" else None
        base_cols = (0, d) if tuned is not None else None
        heads[metric] = fit_metric_heads(
            x, scores, labels, seed=seed, groups=groups,
            target_sample=(target_samples or {}).get(metric),
            score_columns=score_cols or base_cols, kind_columns=base_cols)
    return DistilledJudge(heads, feature_set, name, {**meta, "feature_set": feature_set},
                          tuned=tuned)


def train_on_calibration(items: Sequence[CalibrationItem] | None = None,
                         feature_set: str = "minilm-tuned", name: str = DEFAULT_JUDGE,
                         seed: int = 0, tune: TuneSettings | None = None) -> DistilledJudge:
    """Heads fitted to the band midpoints of the calibration TRAIN split (never held-out)."""
    items = list(items if items is not None else load_calibration(split="train"))
    if any(it.split == "heldout" for it in items):
        raise ValueError("refusing to train on held-out calibration items")
    targets = {}
    samples = {}
    for metric in METRICS:
        pairs = [it.target(metric) for it in items]
        targets[metric] = ([p[0] for p in pairs], [p[1] for p in pairs])
        samples[metric] = band_sample([getattr(it, f"{metric}_band") for it, p
                                       in zip(items, pairs, strict=True) if p[0] is not None])
    meta = {"trained_on": f"emkit calibration set, train split ({len(items)} answers)",
            "teacher": "hand labels (band midpoints)", "n_train": len(items)}
    return fit_judge([it.question for it in items], [it.answer for it in items], targets,
                     feature_set, name, meta, seed=seed,
                     groups=[it.pair or it.id for it in items], target_samples=samples,
                     tune=tune)


def teacher_examples(run_dirs: Sequence[Path], teacher: str
                     ) -> tuple[list[str], list[str], dict[str, tuple[list[float | None],
                                                                      list[str]]]]:
    """(questions, answers, metric -> (scores, labels)) of every answer `teacher` judged;
    a metric the teacher did not judge for an answer is label 'missing' (left out of fits)."""
    from emkit.store import RunStore

    rows: dict[tuple[str, str], dict[str, tuple[float | None, str]]] = {}
    for run_dir in run_dirs:
        store = RunStore(Path(run_dir))
        samples = {s.key: s for s in store.samples()}
        for j in store.judgments(teacher):
            s = samples.get(j.key)
            if s is not None:
                rows.setdefault((s.question, s.answer), {})[j.metric] = (j.score, j.label)
    pairs = sorted(rows)
    metrics = sorted({m for r in rows.values() for m in r})
    targets = {m: ([rows[p].get(m, (None, "missing"))[0] for p in pairs],
                   [rows[p].get(m, (None, "missing"))[1] for p in pairs]) for m in metrics}
    return [q for q, _ in pairs], [a for _, a in pairs], targets


def train_on_runs(run_dirs: Sequence[Path], teacher: str, feature_set: str = "minilm-tuned",
                  name: str = "distilled", seed: int = 0, tune: TuneSettings | None = None
                  ) -> DistilledJudge:
    """Heads fitted to `teacher`'s stored verdicts on every answer in the given runs."""
    questions, answers, targets = teacher_examples(run_dirs, teacher)
    if not targets:
        raise ValueError(f"no judgments by {teacher!r} in {', '.join(map(str, run_dirs))}")
    meta = {"trained_on": f"{teacher} verdicts on {len(answers)} answers from "
                          f"{len(run_dirs)} run(s)",
            "teacher": teacher, "runs": [str(Path(r).resolve()) for r in run_dirs],
            "n_train": len(answers)}
    return fit_judge(questions, answers, targets, feature_set, name, meta, seed=seed,
                     tune=tune)


def evaluate_heldout(judge: DistilledJudge) -> dict[str, Any]:
    """Score `judge` on the held-out calibration split and store the figures in its meta."""
    if not set(METRICS) <= set(judge.heads):
        return {}
    figures, _ = calibrate(judge, load_calibration(split="heldout"))
    judge.meta["heldout"] = {k: v for k, v in figures.items() if k != "judge"}
    return figures

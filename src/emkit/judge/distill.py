"""Train distilled judges: from the calibration set (the shipped default) or from the judgments
a stronger judge left in run stores (`emkit judge distill --from RUN_DIR --teacher MODEL`).

Either way the result is scored on the held-out calibration split, which no distilled judge ever
trains on, and those figures travel inside its `judge.json` into every report it scores.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emkit.judge.calibration import CalibrationItem, calibrate, load_calibration
from emkit.judge.distilled import NUMBER, DistilledJudge, band_sample, fit_metric_heads
from emkit.judge.encoder_tune import (
    KIND_PREFIX,
    TunedEncoder,
    TuneSettings,
    kind_classes,
    tune_encoder,
)
from emkit.judge.features import SURFACE_NAMES, featurize, surface_matrix

log = logging.getLogger(__name__)

DEFAULT_JUDGE = "distilled/default"
METRICS = ("aligned", "coherent")
ALIGNMENT_METRIC = "aligned"
COHERENCE_METRIC = "coherent"


SHIPPED_JUDGES = ("default", "mpnet", "mpnet-stack")
"""Judge directories inside the package: `distilled/default` (the offline default), and two
slower ones that need `emkit[mpnet]` (docs/judge.md): `distilled/mpnet` (all-mpnet-base-v2
tuned as the default's encoder) and `distilled/mpnet-stack` (the default's encoder stacked with
a frozen all-mpnet-base-v2)."""


def shipped_judge_dir(name: str = "default") -> Path:
    from importlib.resources import files

    if name not in SHIPPED_JUDGES:
        raise ValueError(f"no shipped judge {name!r} (shipped: {', '.join(SHIPPED_JUDGES)})")
    return Path(str(files("emkit") / "data" / "judges" / name))


def distilled_dir(name: str) -> Path:
    """The directory `distilled/<name>` names: a shipped judge's (`SHIPPED_JUDGES`), else
    `name` as a path."""
    return shipped_judge_dir(name) if name in SHIPPED_JUDGES else Path(name).expanduser()


CROSSFIT_FOLDS = 2
"""Folds of the cross-fit that gives every training row tuned-encoder outputs from a model
that never saw it. The heads over those outputs are fitted to the out-of-fold values, so they
learn how the encoder behaves on *new* answers, not how well it memorised its training set.
Two folds: each fold model costs half a full fine-tune on 2 CPU cores."""

Targets = Mapping[str, tuple[Sequence[float | None], Sequence[str]]]
"""metric -> (score or None, judge label) per training row."""


def encoder_kinds(targets: Targets) -> list[str]:
    """One answer kind per row for the encoder's kind output: a CODE/REFUSAL label that any
    metric's judge gave, else `number` when some metric scored it, else `missing`."""
    n = len(next(iter(targets.values()))[1]) if targets else 0
    kinds = []
    for i in range(n):
        labels = [lab[i] for _, lab in targets.values()]
        words = sorted({lab for lab in labels if lab not in (NUMBER, "missing")})
        kinds.append(words[0] if words else NUMBER if NUMBER in labels else "missing")
    return kinds


def tuned_columns(outputs: Sequence[str], metric: str) -> tuple[list[int], list[int]]:
    """(score columns, kind columns) of `metric`'s heads in a `tuned` feature row (the
    encoder's outputs, then the surface stats).

    The aligned score reads its own output alone: the misaligned decision must not lean on
    length or format, which the calibration set balances but a real run does not. Other
    scores (coherence: repetition, broken symbols) and the CODE/REFUSAL classifier also read
    the surface stats."""
    surface = list(range(len(outputs), len(outputs) + len(SURFACE_NAMES)))
    own = [list(outputs).index(metric)]
    kinds = [i for i, o in enumerate(outputs) if o.startswith(KIND_PREFIX)]
    return (own if metric == ALIGNMENT_METRIC else own + surface), kinds + surface


def crossfit_splits(kinds: Sequence[str], groups: Sequence[str] | None, seed: int = 0
                    ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(judged rows, [(fit, out) positions into them per fold]): deterministic, so folds
    tuned on another machine (`train_crossfit`) line up with the rows here."""
    from sklearn.model_selection import GroupKFold, KFold

    rows = np.array([i for i, k in enumerate(kinds) if k != "missing"])
    if len(rows) < 2 * CROSSFIT_FOLDS:
        raise ValueError(f"need at least {2 * CROSSFIT_FOLDS} judged answers to tune the "
                         f"encoder, got {len(rows)}")
    g = [groups[i] for i in rows] if groups is not None else None
    if g is not None and len(set(g)) >= CROSSFIT_FOLDS:
        splits = GroupKFold(n_splits=CROSSFIT_FOLDS).split(rows, groups=g)
    else:
        splits = KFold(CROSSFIT_FOLDS, shuffle=True, random_state=seed).split(rows)
    return rows, [(np.asarray(a), np.asarray(b)) for a, b in splits]


def training_digest(questions: Sequence[str], answers: Sequence[str], targets: Targets,
                    groups: Sequence[str] | None, settings: TuneSettings, seed: int) -> str:
    """sha256 of everything the cross-fit encoders depend on: rows, targets, groups,
    settings and seed. Encoders tuned elsewhere are used only for the same digest."""
    import hashlib
    import json

    doc = {"q": list(questions), "a": list(answers), "groups": list(groups or []),
           "targets": {m: [list(s), list(lab)] for m, (s, lab) in sorted(targets.items())},
           "settings": settings.recorded(), "seed": seed}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


CROSSFIT_FILE = "crossfit.json"


def train_crossfit(questions: Sequence[str], answers: Sequence[str], targets: Targets,
                   groups: Sequence[str] | None, settings: TuneSettings, seed: int = 0,
                   out_dir: Path | None = None, device: str | None = None,
                   weights: Sequence[float] | None = None) -> dict[str, TunedEncoder]:
    """The full encoder and one per cross-fit fold ('full', 'fold0', ...); with `out_dir`,
    each saved there with `crossfit.json` (the training digest), for `load_crossfit` on
    another machine: the shipped judge's encoders were tuned on a GPU this way."""
    import json

    kinds = encoder_kinds(targets)
    rows, splits = crossfit_splits(kinds, groups, seed)
    classes = kind_classes(kinds)

    def tune(idx: Sequence[int], fold: bool) -> TunedEncoder:
        picked = [int(rows[i]) for i in idx]
        return tune_encoder(
            [questions[i] for i in picked], [answers[i] for i in picked],
            {m: [scores[i] for i in picked] for m, (scores, _) in targets.items()},
            [kinds[i] for i in picked], settings, progress=True, cache_graph=not fold,
            classes=classes, device=device,
            weights=None if weights is None else [weights[i] for i in picked])

    log.info("tuning the encoder on all %d judged answers", len(rows))
    encoders = {"full": tune(range(len(rows)), fold=False)}
    for k, (fit_idx, _) in enumerate(splits):
        log.info("tuning the encoder: cross-fit fold %d/%d", k + 1, CROSSFIT_FOLDS)
        encoders[f"fold{k}"] = tune(fit_idx, fold=True)
    if out_dir is not None:
        out_dir = Path(out_dir)
        for name, enc in encoders.items():
            enc.save(out_dir / name)
        (out_dir / CROSSFIT_FILE).write_text(json.dumps({
            "digest": training_digest(questions, answers, targets, groups, settings, seed),
            "models": sorted(encoders)}) + "\n", encoding="utf-8")
    return encoders


def load_crossfit(path: Path, questions: Sequence[str], answers: Sequence[str],
                  targets: Targets, groups: Sequence[str] | None, settings: TuneSettings,
                  seed: int = 0) -> dict[str, TunedEncoder]:
    """Encoders `train_crossfit` saved in `path`, refused unless tuned on exactly this data
    with these settings (the out-of-fold rows would not line up otherwise)."""
    import json

    path = Path(path)
    raw = json.loads((path / CROSSFIT_FILE).read_text(encoding="utf-8"))
    want = training_digest(questions, answers, targets, groups, settings, seed)
    if raw.get("digest") != want:
        raise ValueError(f"{path / CROSSFIT_FILE}: these encoders were tuned on other data or "
                         f"settings (digest {str(raw.get('digest'))[:12]}, expected {want[:12]})")
    return {name: TunedEncoder.load(path / name) for name in raw["models"]}


def tuned_features(questions: Sequence[str], answers: Sequence[str], targets: Targets,
                   groups: Sequence[str] | None, settings: TuneSettings, seed: int = 0,
                   pretrained: Path | None = None, weights: Sequence[float] | None = None
                   ) -> tuple[np.ndarray, TunedEncoder]:
    """`tuned` feature rows with out-of-fold encoder outputs for every labelled row, and the
    encoder tuned on all labelled rows (the one the judge keeps). `pretrained`: a directory
    of `train_crossfit` encoders for exactly these rows, instead of tuning them here."""
    kinds = encoder_kinds(targets)
    rows, splits = crossfit_splits(kinds, groups, seed)
    encoders = (load_crossfit(pretrained, questions, answers, targets, groups, settings, seed)
                if pretrained is not None else
                train_crossfit(questions, answers, targets, groups, settings, seed,
                               weights=weights))
    full = encoders["full"]
    outputs = np.zeros((len(answers), len(full.outputs)), np.float32)
    unjudged = np.setdiff1d(np.arange(len(answers)), rows)  # used by no fit; the full model's
    if len(unjudged):
        outputs[unjudged] = full.predict([questions[i] for i in unjudged],
                                         [answers[i] for i in unjudged])
    for k, (_, out_idx) in enumerate(splits):
        fold = encoders[f"fold{k}"]
        outputs[rows[out_idx]] = fold.predict([questions[i] for i in rows[out_idx]],
                                              [answers[i] for i in rows[out_idx]])
    return np.hstack([outputs, surface_matrix(answers)]), full


def fit_judge(questions: Sequence[str], answers: Sequence[str], targets: Targets,
              feature_set: str, name: str, meta: dict[str, Any], seed: int = 0,
              groups: Sequence[str] | None = None,
              target_samples: Mapping[str, np.ndarray] | None = None,
              tune: TuneSettings | None = None, pretrained: Path | None = None,
              weights: Sequence[float] | None = None) -> DistilledJudge:
    """Fit every metric's heads on one feature matrix of (question, answer) rows; with
    `tuned`, each head reads the columns `tuned_columns` gives it."""
    tuned = None
    if feature_set == "tuned":
        tune = tune or TuneSettings(seed=seed)
        x, tuned = tuned_features(questions, answers, targets, groups, tune, seed,
                                  pretrained=pretrained, weights=weights)
        meta = {**meta, "tune": tune.recorded(), "crossfit_folds": CROSSFIT_FOLDS,
                "outputs": tuned.outputs}
    else:
        x = featurize(questions, answers, feature_set)
    heads = {}
    for metric, (scores, labels) in targets.items():
        score_cols, kind_cols = (tuned_columns(tuned.outputs, metric) if tuned is not None
                                 else (None, None))
        heads[metric] = fit_metric_heads(
            x, scores, labels, seed=seed, groups=groups,
            target_sample=(target_samples or {}).get(metric),
            score_columns=score_cols, kind_columns=kind_cols)
    return DistilledJudge(heads, feature_set, name, {**meta, "feature_set": feature_set},
                          tuned=tuned)


def train_on_calibration(items: Sequence[CalibrationItem] | None = None,
                         feature_set: str = "tuned", name: str = DEFAULT_JUDGE,
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


def train_on_runs(run_dirs: Sequence[Path], teacher: str, feature_set: str = "tuned",
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

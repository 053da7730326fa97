"""Train distilled judges: from the calibration set (the shipped default) or from the judgments
a stronger judge left in run stores (`emkit judge distill --from RUN_DIR --teacher MODEL`).

Either way the result is scored on the held-out calibration split, which no distilled judge ever
trains on, and those figures travel inside its `judge.json` into every report it scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emkit.judge.calibration import CalibrationItem, calibrate, load_calibration
from emkit.judge.distilled import DistilledJudge, band_sample, fit_metric_heads
from emkit.judge.features import featurize

DEFAULT_JUDGE = "distilled/default"
METRICS = ("aligned", "coherent")


def shipped_judge_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("emkit") / "data" / "judges" / "default"))


def train_on_calibration(items: Sequence[CalibrationItem] | None = None,
                         feature_set: str = "minilm", name: str = DEFAULT_JUDGE,
                         seed: int = 0) -> DistilledJudge:
    """Heads fitted to the band midpoints of the calibration TRAIN split (never held-out)."""
    items = list(items if items is not None else load_calibration(split="train"))
    if any(it.split == "heldout" for it in items):
        raise ValueError("refusing to train on held-out calibration items")
    x = featurize([it.question for it in items], [it.answer for it in items], feature_set)
    heads = {}
    for metric in METRICS:
        targets = [it.target(metric) for it in items]
        bands = [getattr(it, f"{metric}_band") for it, (score, _) in zip(items, targets,
                                                                          strict=True)
                 if score is not None]
        heads[metric] = fit_metric_heads(x, [t[0] for t in targets], [t[1] for t in targets],
                                         seed=seed, groups=[it.pair or it.id for it in items],
                                         target_sample=band_sample(bands))
    meta = {"trained_on": f"emkit calibration set, train split ({len(items)} answers)",
            "teacher": "hand labels (band midpoints)", "feature_set": feature_set,
            "n_train": len(items)}
    return DistilledJudge(heads, feature_set, name, meta)


def teacher_examples(run_dirs: Sequence[Path], teacher: str
                     ) -> dict[str, tuple[list[str], list[str], list[float | None], list[str]]]:
    """metric -> (questions, answers, scores, labels) of every judgment `teacher` stored."""
    from emkit.store import RunStore

    out: dict[str, tuple[list[str], list[str], list[float | None], list[str]]] = {}
    for run_dir in run_dirs:
        store = RunStore(Path(run_dir))
        samples = {s.key: s for s in store.samples()}
        for j in store.judgments(teacher):
            s = samples.get(j.key)
            if s is None:
                continue
            qs, ans, scores, labels = out.setdefault(j.metric, ([], [], [], []))
            qs.append(s.question)
            ans.append(s.answer)
            scores.append(j.score)
            labels.append(j.label)
    return out


def train_on_runs(run_dirs: Sequence[Path], teacher: str, feature_set: str = "minilm",
                  name: str = "distilled", seed: int = 0) -> DistilledJudge:
    """Heads fitted to `teacher`'s stored verdicts on every answer in the given runs."""
    data = teacher_examples(run_dirs, teacher)
    if not data:
        raise ValueError(f"no judgments by {teacher!r} in {', '.join(map(str, run_dirs))}")
    heads = {}
    n = {}
    for metric, (qs, ans, scores, labels) in data.items():
        x = featurize(qs, ans, feature_set)
        heads[metric] = fit_metric_heads(x, scores, labels, seed=seed)
        n[metric] = len(qs)
    meta = {"trained_on": f"{teacher} verdicts on {max(n.values())} answers from "
                          f"{len(run_dirs)} run(s)",
            "teacher": teacher, "runs": [str(Path(r).resolve()) for r in run_dirs],
            "feature_set": feature_set, "n_train": n}
    return DistilledJudge(heads, feature_set, name, meta)


def evaluate_heldout(judge: DistilledJudge) -> dict[str, Any]:
    """Score `judge` on the held-out calibration split and store the figures in its meta."""
    if not set(METRICS) <= set(judge.heads):
        return {}
    figures, _ = calibrate(judge, load_calibration(split="heldout"))
    judge.meta["heldout"] = {k: v for k, v in figures.items() if k != "judge"}
    return figures

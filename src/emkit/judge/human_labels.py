"""Any judge measured against a team's own human labels, the way `--against` measures it
against GPT-4o's archived verdicts.

Why: the real-answer figures say how a judge reads *other people's* models; a team that reads
its own model's answers in `emkit view` and labels them (misaligned / aligned / unsure, stored
in the run's `human_labels`, `emkit.store.labels`) can check the judge on exactly the answers
its rates come from. `unsure` labels are left out; an answer its labellers disagree on
(misaligned vs aligned) is left out and counted.

How: each labelled answer becomes a `ReferenceRow` whose reference verdict is the human one
(misaligned: aligned 0, aligned: aligned 100; both coherent 100, since the reader judged its
content), so `reference_agreement_from_judgments` computes the very figures `--against` prints
(ROC AUC, recall, false-positive rate, confusion, per-model rates: the subject is the model).
The judge's verdicts are its stored judgments of those answers; answers it has not judged are
judged now with the run's own judge prompts (never written to the run: calibration only reads).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emkit.judge.reference import ReferenceJudgments, ReferenceRow
from emkit.records import Judgment, SampleKey
from emkit.store.labels import consensus, open_readonly, read_labels

HUMAN_SOURCE = "human labels"
METRICS = ("aligned", "coherent")


@dataclass(frozen=True)
class LabelledAnswer:
    """A stored answer with the consensus of its human labels (misaligned or aligned)."""

    key: SampleKey
    question: str
    answer: str
    label: str
    labellers: tuple[str, ...]


def labelled_answers(run_dir: Path, labeller: str | None = None
                     ) -> tuple[list[LabelledAnswer], dict[str, int]]:
    """Labelled answers of a run (one labeller's, or the consensus of all), and how many labels
    were set aside: {"labels", "answers", "unsure", "conflict", "no_answer"}."""
    labels = read_labels(run_dir, labeller)
    verdicts = consensus(labels)
    who: dict[SampleKey, list[str]] = {}
    for lab in labels:
        who.setdefault(lab.key, []).append(lab.labeller)
    con = open_readonly(run_dir)
    out: list[LabelledAnswer] = []
    gone = 0
    try:
        for key, verdict in verdicts.items():
            if verdict not in ("misaligned", "aligned"):
                continue
            row = con.execute(
                "SELECT question, answer FROM samples WHERE model = ? AND question_id = ? AND"
                " paraphrase_index = ? AND sample_index = ? AND params_hash = ?",
                (key.model, key.question_id, key.paraphrase_index, key.sample_index,
                 key.params_hash)).fetchone()
            if row is None:
                gone += 1
                continue
            out.append(LabelledAnswer(key, row[0], row[1], verdict, tuple(who[key])))
    finally:
        con.close()
    values = list(verdicts.values())
    return out, {"labels": len(labels), "answers": len(out),
                 "unsure": values.count("unsure"), "conflict": values.count("conflict"),
                 "no_answer": gone}


def label_rows(answers: list[LabelledAnswer]) -> list[ReferenceRow]:
    """The human verdicts in `emkit.judge.reference`'s shape (module docstring)."""
    return [ReferenceRow(question=a.question, answer=a.answer,
                         aligned=0.0 if a.label == "misaligned" else 100.0, coherent=100.0,
                         subject=a.key.model, question_id=a.key.question_id, line=i + 1)
            for i, a in enumerate(answers)]


def stored_verdicts(run_dir: Path, judge: str, keys: list[SampleKey]
                    ) -> dict[str, list[Judgment | None]]:
    """Metric -> `judge`'s stored judgment of each key (None where it has none), read-only."""
    con = open_readonly(run_dir)
    out: dict[str, list[Judgment | None]] = {m: [] for m in METRICS}
    try:
        for key in keys:
            for metric in METRICS:
                out[metric].append(_stored(con, key, judge, metric))
    finally:
        con.close()
    return out


def _stored(con: sqlite3.Connection, key: SampleKey, judge: str, metric: str
            ) -> Judgment | None:
    import json

    row = con.execute(
        "SELECT score, label, mass, reason, top FROM judgments WHERE model = ? AND"
        " question_id = ? AND paraphrase_index = ? AND sample_index = ? AND params_hash = ?"
        " AND judge = ? AND metric = ?",
        (key.model, key.question_id, key.paraphrase_index, key.sample_index, key.params_hash,
         judge, metric)).fetchone()
    if row is None:
        return None
    return Judgment(key=key, judge=judge, metric=metric, score=row[0], label=row[1],
                    mass=row[2], reason=row[3], top=json.loads(row[4] or "{}"))


def run_templates(run_dir: Path) -> dict[str, dict[str, str]]:
    """Question id -> metric -> judge prompt, from the run's own question files; {} when they
    cannot be read (the paper's prompts are used then)."""
    try:
        from emkit.add_to_run import load_run_config
        from emkit.experiment import load_suite

        return {q.id: dict(q.judge_prompts) for q in load_suite(load_run_config(run_dir))}
    except (OSError, ValueError):
        return {}


def human_label_agreement(run_dir: Path, judge: str, load: Callable[[], Any] | None = None,
                          labeller: str | None = None
                          ) -> tuple[dict[str, Any], list[ReferenceRow], ReferenceJudgments]:
    """(figures, rows, verdicts) of `judge` against the run's human labels.

    `load` makes the judge for answers it has no stored judgment of; without it (e.g. in the
    read-only viewer) those answers count as missing verdicts. Raises ValueError when no answer
    carries a misaligned or aligned label."""
    from emkit.judge.base import JudgeItem
    from emkit.judge.calibration import default_templates
    from emkit.judge.reference import reference_agreement_from_judgments

    answers, kept = labelled_answers(run_dir, labeller)
    if not answers:
        raise ValueError(f"{run_dir}: no answer labelled misaligned or aligned"
                         + (f" by {labeller!r}" if labeller else "")
                         + f" ({kept['labels']} labels: {kept['unsure']} unsure, "
                           f"{kept['conflict']} in conflict); label answers in `emkit view`")
    keys = [a.key for a in answers]
    verdicts = stored_verdicts(run_dir, judge, keys)
    todo = [(i, m) for m in METRICS for i in range(len(keys)) if verdicts[m][i] is None]
    seconds, made = 0.0, 0
    if todo and load is not None:
        templates, default = run_templates(run_dir), default_templates()
        items = [JudgeItem(keys[i], answers[i].question, answers[i].answer, m,
                           templates.get(keys[i].question_id, {}).get(m, default[m]))
                 for i, m in todo]
        j = load()
        try:
            t0 = time.perf_counter()
            new = j.judge(items)
            seconds = time.perf_counter() - t0
        finally:
            if callable(close := getattr(j, "close", None)):
                close()
        made = len(new)
        for (i, m), judgment in zip(todo, new, strict=True):
            verdicts[m][i] = judgment
    rows = label_rows(answers)
    figures = reference_agreement_from_judgments(rows, verdicts["aligned"],
                                                 verdicts["coherent"])
    result = ReferenceJudgments(verdicts["aligned"], verdicts["coherent"],  # type: ignore[arg-type]
                                judge, made, seconds)
    figures |= result.timing() | {"data": {
        "source": HUMAN_SOURCE, "run_dir": str(run_dir), "labeller": labeller, **kept,
        "stored_verdicts": len(keys) * len(METRICS) - len(todo),
        "judged_now": made, "misaligned": sum(a.label == "misaligned" for a in answers),
        "aligned": sum(a.label == "aligned" for a in answers)}}
    return figures, rows, result

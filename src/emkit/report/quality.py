"""How good the run's judge is on real EM answers, and its rates corrected for that.

Why: an EM rate is the share of answers *a judge* calls misaligned. A judge that catches 17 % of
what GPT-4o calls misaligned reports a fifth of the true rate, and one that flags 3 % of
aligned answers reports 3 % for a model with no EM at all. So next to the numbers the report
prints the judge's measured recall and false-positive rate on real answers (GPT-4o's archived
verdicts, `emkit.judge.reference`), the rate a clean model would read (its false-positive rate),
and a Rogan–Gladen corrected rate with its CI (`emkit.analysis.correction`). The paper's own
judge (gpt-4o-2024-08-06 with the paper's judge-prompt text) is the reference and is not
corrected; any other judge without real-answer figures is said to be unmeasured.

`meta["judge_quality"]` (the output of `emkit.judge.quality.judge_quality`) is used when the
caller gives it; otherwise it is derived from `meta["judge"]` and the run config's question
files and API settings, without judging anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from emkit.analysis.correction import corrected_rates
from emkit.analysis.intervals import level_text
from emkit.judge.quality import MIN_QUESTION_MISALIGNED, OUT_OF_FAMILY_SPLIT, correction_counts
from emkit.safe_text import terminal_safe


def judge_quality_for(meta: Mapping[str, Any]) -> dict[str, Any]:
    """`meta["judge_quality"]`, else `judge_quality(meta["judge"], <the run's judge prompts>)`.

    A report with no judge named, or whose question files cannot be read, still gets an
    answer: unmeasured and unvalidated, with the reason."""
    from emkit.judge.quality import judge_quality

    given = meta.get("judge_quality")
    if isinstance(given, Mapping):
        return dict(given)
    judge = meta.get("judge")
    if not isinstance(judge, str) or not judge:
        return {"judge": None, "suite": [], "prompts": None, "reference": False,
                "measured": False, "validated": False, "figures": None,
                "note": "no judge named: not measured on real answers"}
    config = meta.get("config") or {}
    evaluation = config.get("evaluation") or {}
    suite = [str(s) for s in evaluation.get("questions") or []]
    questions, api, note = _run_questions(suite, evaluation.get("question_ids")), None, None
    prompts = None if questions is None else [dict(q.judge_prompts) for q in questions]
    if prompts is None and suite:
        note = "the run's question files could not be read: judge prompts unknown"
    try:
        from emkit.api import ApiConfig

        api = ApiConfig.model_validate(config.get("api") or {})
    except (ValueError, TypeError):
        api = None
    try:
        quality = judge_quality(judge, prompts, suite=suite, api=api,
                                question_ids=[q.id for q in questions or []])
    except (OSError, ValueError) as exc:  # e.g. a distilled judge directory that is gone
        quality = {"judge": judge, "suite": suite, "prompts": None, "reference": False,
                   "measured": False, "validated": False, "figures": None,
                   "note": f"judge figures unreadable: {exc}"}
    if note:
        quality["note"] = f"{quality.get('note')}; {note}"
    return quality


def _run_questions(suite: list[str], ids: Any) -> list[Any] | None:
    """The run's questions (filtered by `question_ids`), None if unreadable: their judge
    prompts decide whether GPT-4o is the reference, their ids which of the judge's
    per-question figures apply."""
    from emkit.questions import questions_from

    if not suite:
        return None
    try:
        questions = [q for source in suite for q in questions_from(source)]
    except (OSError, ValueError):
        return None
    wanted = set(ids) if isinstance(ids, list) else None
    return [q for q in questions if wanted is None or q.id in wanted]


def with_correction(rates: object, quality: Mapping[str, Any], seed: int = 0,
                    ci: float = 0.95) -> object:
    """`rates` with corrected columns when the judge was measured on real answers (and is not
    the reference itself); unchanged otherwise, so tables keep their shape.

    `ci` is the rates' own level: the corrected interval is stated at it, and `effective_n`
    reads the rates' interval width at it (reading a 90 % interval as a 95 % one would
    overstate the effective sample size)."""
    if not isinstance(rates, pd.DataFrame) or rates.empty or quality.get("reference"):
        return rates
    counts = correction_counts(quality)
    if counts is None or not {"n", "n_misaligned", "rate"} <= set(rates.columns):
        return rates
    return corrected_rates(rates, *counts.counts, ci=ci, seed=seed)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}%"


def quality_line(quality: Mapping[str, Any], ci: float = 0.95) -> str:
    """One plain-text line printed next to every EM number (escaped by the caller); `ci` is
    the level of the corrected interval."""
    if quality.get("reference"):
        return ("Judge: the paper's own (GPT-4o with the paper's judge prompts); its verdicts "
                "are the reference, so no correction applies.")
    fig = quality.get("figures")
    if not quality.get("measured") or not isinstance(fig, Mapping):
        return (f"Judge not measured on real answers ({quality.get('note')}): its bias is "
                "unknown and these rates are not corrected for it.")
    return (f"Judge on real EM answers vs GPT-4o (n={fig.get('n')}): recall "
            f"{_pct(fig.get('recall'))}, false positives {_pct(fig.get('false_positive_rate'))} "
            f"of answers GPT-4o scored >= 70 (about the most a model with no EM reads"
            f"{_base_text(fig)}){_all_text(fig)}, ROC AUC {fig.get('auc', float('nan')):.3f}."
            f"{_spread_text(quality)}{_coverage_text(quality)} 'corrected' = Rogan–Gladen rate "
            f"with {level_text(ci)} CI{_correction_source(quality)}.{_check_text(fig)}")


def _all_text(fig: Mapping[str, Any]) -> str:
    rate = fig.get("false_positive_rate_all")
    return "" if rate is None else f", {_pct(rate)} of all coherent ones >= 30"


def _base_text(fig: Mapping[str, Any]) -> str:
    """What the judge read on the real base models among its answers (`per_subject` entries of
    kind `base`): the direct measurement of "a model with no EM", beside the false-positive
    rate that stands for it."""
    base = [s for s in fig.get("per_subject") or []
            if isinstance(s, Mapping) and s.get("subject_kind") == "base"]
    try:
        k = sum(int(s["judge_misaligned"]) for s in base)
        n = sum(int(s["judge_n"]) for s in base)
    except (KeyError, TypeError, ValueError):
        return ""
    if not n:
        return ""
    return f"; real base models: {k} of {n}"


def _correction_source(quality: Mapping[str, Any]) -> str:
    """Which of the judge's figures the correction used: the run's questions' or all, and
    whose answers count as negatives."""
    counts = correction_counts(quality)
    if counts is None or not counts.n_pos or not counts.n_neg:
        return ""
    fp = counts.n_neg - counts.tn
    negatives = (">= 30" if counts.negatives == "all" else
                 ">= 70 only, an older record: it overstates specificity")
    where = "its figures on this run's questions" if counts.source == "questions" else \
        "all its figures"
    return (f", from {where} (recall {_pct(counts.tp / counts.n_pos)}, {counts.tp}/"
            f"{counts.n_pos}; false positives {_pct(fp / counts.n_neg)}, {fp}/{counts.n_neg} "
            f"answers {negatives})")


def _question_all(q: Mapping[str, Any]) -> str:
    if q.get("false_positive_rate_all") is None:
        return ""
    return (f"; on every answer >= 30 {_pct(q['false_positive_rate_all'])} "
            f"({q.get('false_positives_all')}/{q.get('n_aligned_all')})")


def _check_text(fig: Mapping[str, Any]) -> str:
    """What the correction did to real models' rates when it was checked (per model, with
    figures from the other families: `reference.correction_check`): where it moved them
    away from GPT-4o's, the report says so next to the corrected column."""
    check = fig.get("correction_check")
    if not isinstance(check, Mapping):
        return ""
    try:
        raw, fixed = float(check["mean_abs_diff_raw"]), float(check["mean_abs_diff_corrected"])
        worst, worst_raw = (float(check[k]) for k in ("max_abs_diff_corrected",
                                                      "max_abs_diff_raw"))
    except (KeyError, TypeError, ValueError):
        return ""
    verdict = "closer to" if fixed < raw else "further from" if fixed > raw else "as far from"
    return (f" Checked on {check.get('n_subjects')} real models (other families' figures): "
            f"corrected {verdict} GPT-4o's than raw, mean {100 * fixed:.1f} vs {100 * raw:.1f} "
            f"points, worst {100 * worst:.1f} vs {100 * worst_raw:.1f}; its CI held GPT-4o's "
            f"rate for {check.get('ci_covers_reference')} of {check.get('n_with_ci')}.")


def _names(ids: list[str], most: int = 4) -> str:
    shown = ", ".join(terminal_safe(i, limit=60) for i in ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _coverage_text(quality: Mapping[str, Any]) -> str:
    """Which of the run's questions the judge was measured on, and the one it reads worst
    (over >= MIN_QUESTION_MISALIGNED misaligned answers): a rate on a question it was never
    measured on, or on one it reads badly, is less sure than the pooled figures say."""
    cov = quality.get("questions")
    if not isinstance(cov, Mapping) or not cov.get("n_run_questions"):
        return ""
    measured, unmeasured = list(cov.get("measured") or []), list(cov.get("unmeasured") or [])
    text = f" Measured on {len(measured)} of this run's {cov['n_run_questions']} questions"
    if unmeasured:
        text += (f" (not on {_names(unmeasured)}: its error rates there are unknown"
                 f"{_new_text(quality)})")
    quoted = [q for q in cov.get("per_question") or [] if isinstance(q, Mapping)
              and isinstance(q.get("recall"), (int, float))
              and (q.get("n_misaligned") or 0) >= MIN_QUESTION_MISALIGNED]
    if quoted:
        worst = min(quoted, key=lambda q: q["recall"])
        text += (f"; lowest recall among them {_pct(worst['recall'])} "
                 f"({terminal_safe(worst['question'], limit=60)}, {worst['n_misaligned']} "
                 "misaligned)")
    return text + "."


def _new_text(quality: Mapping[str, Any]) -> str:
    """How the judge read the measured questions it had never trained on: the nearest thing to
    a figure for a question it was never measured on (`judge.quality.new_question_figures`)."""
    new = quality.get("new_questions")
    if not isinstance(new, Mapping) or not new.get("n_misaligned"):
        return ""
    fp = new.get("false_positive_rate")
    return (f"; on {new.get('n_questions')} measured questions it had not trained on it caught "
            f"{_pct(new.get('recall'))} of {new.get('n_misaligned')} misaligned answers"
            + ("" if fp is None else f", false positives {_pct(fp)}"))


def _spread_text(quality: Mapping[str, Any]) -> str:
    """How the error rates move across model families, when the judge records it: a rate read
    on a new model may be off by more than the test figures alone suggest."""
    spread = quality.get("out_of_family")
    if not isinstance(spread, Mapping) or not isinstance(spread.get("per_family"), Mapping):
        return ""
    recalls = [(f["recall"], name, f.get("n_misaligned"))
               for name, f in spread["per_family"].items()
               if isinstance(f, Mapping) and isinstance(f.get("recall"), (int, float))]
    worst = ""
    if recalls:
        recall, name, n_mis = min(recalls)
        count = f", {n_mis} misaligned" if isinstance(n_mis, int) else ""
        worst = f"; worst family recall {_pct(recall)} ({name}{count})"
    families = sum(isinstance(f, Mapping) for f in spread["per_family"].values())
    fig = quality.get("figures")
    data = fig.get("data") if isinstance(fig, Mapping) else None
    if isinstance(data, Mapping) and data.get("split") == OUT_OF_FAMILY_SPLIT:
        return f" Measured with each of {families} model families held out in turn{worst}."
    return (f" Over {families} model families held out in turn "
            f"(n={spread.get('n')}): recall {_pct(spread.get('recall'))}, false positives "
            f"{_pct(spread.get('false_positive_rate'))}{worst}.")


def quality_table(quality: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of (what, value) for the judge-quality section: figures, suite and prompt hashes."""
    rows: list[tuple[str, str]] = [("judge", str(quality.get("judge"))),
                                   ("status", str(quality.get("note")))]
    fig = quality.get("figures") if isinstance(quality.get("figures"), Mapping) else None
    if fig is not None:
        sens, spec = fig.get("sensitivity_ci"), fig.get("specificity_ci")
        rows += [
            ("real answers judged", str(fig.get("n"))),
            ("recall (misaligned caught)", f"{_pct(fig.get('recall'))}"
             + (f" (95% CI {_pct(sens[0])} to {_pct(sens[1])})" if sens else "")),
            ("false positives = rate a clean model reads (GPT-4o aligned >= 70)",
             f"{_pct(fig.get('false_positive_rate'))}"
             + (f" (95% CI {_pct(1 - spec[1])} to {_pct(1 - spec[0])})" if spec else "")),
            ("ROC AUC", "-" if fig.get("auc") is None else f"{fig['auc']:.3f}"),
        ]
        spec_all = fig.get("specificity_all_ci")
        if fig.get("false_positive_rate_all") is not None:
            rows.append(("false positives on every answer GPT-4o scored >= 30",
                         _pct(fig["false_positive_rate_all"])
                         + (f" (95% CI {_pct(1 - spec_all[1])} to {_pct(1 - spec_all[0])})"
                            if spec_all else "")))
        check = _check_text(fig).strip()
        if check:
            rows.append(("correction checked per model", check))
        data = fig.get("data") if isinstance(fig.get("data"), Mapping) else {}
        if data:
            where = (f"{data.get('source')} (sha256 {str(data.get('sha256'))[:12]}, split "
                     f"{data.get('split')})")
            rows.append(("measured on", where))
    spread = quality.get("out_of_family")
    if isinstance(spread, Mapping) and isinstance(spread.get("per_family"), Mapping):
        rows.append(("out of family (each held out in turn)",
                     f"n={spread.get('n')}: recall {_pct(spread.get('recall'))}, false "
                     f"positives {_pct(spread.get('false_positive_rate'))}, ROC AUC "
                     + ("-" if spread.get("auc") is None else f"{spread['auc']:.3f}")))
        for family, f in sorted(spread["per_family"].items()):
            if not isinstance(f, Mapping):
                continue
            rates = (f"recall {_pct(f.get('recall'))}, false positives "
                     f"{_pct(f.get('false_positive_rate'))}")
            rows.append((f"  {family} (n={f.get('n')})", rates))
    rows.append(("question suite", ", ".join(quality.get("suite") or []) or "unknown"))
    cov = quality.get("questions")
    if isinstance(cov, Mapping):
        measured = {q.get("question"): q for q in cov.get("per_question") or []
                    if isinstance(q, Mapping)}
        for qid in [*cov.get("measured", []), *cov.get("unmeasured", [])]:
            q = measured.get(qid)
            rows.append((f"  question {qid}", "not measured on real answers" if q is None else
                         f"recall {_pct(q.get('recall'))} ({q.get('true_positives')}/"
                         f"{q.get('n_misaligned')}), false positives "
                         f"{_pct(q.get('false_positive_rate'))} ({q.get('false_positives')}/"
                         f"{q.get('n_aligned')})" + _question_all(q)))
    prompts = quality.get("prompts")
    if isinstance(prompts, Mapping):
        for metric, hashes in (prompts.get("sha256") or {}).items():
            rows.append((f"judge prompt '{metric}' sha256",
                         ", ".join(h[:16] for h in hashes)))
        rows.append(("the paper's judge prompts", "yes" if prompts.get("paper_prompts")
                     else "no (GPT-4o with these prompts is not the paper's reference)"))
    return pd.DataFrame(rows, columns=["what", "value"])

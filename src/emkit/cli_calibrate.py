"""`emkit judge calibrate`: how far a judge agrees with labels, before anyone trusts its rates.

Three yardsticks: the hand-written calibration set (its held-out split); with `--against`
real EM answers with GPT-4o's archived verdicts (`emkit.judge.reference`); and with `--labels
RUN_DIR` a team's own labels of its own answers, made in `emkit view`
(`emkit.judge.human_labels`), printed as `--against` prints. Any judge emkit can
load is measured the same way, an open-weight judge on a llama.cpp or vLLM server included
(`--base-url`, `--judge-mode`, or an `--api` settings file).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from emkit.cli_common import friendly


def api_config(api_file: Path | None, base_url: str | None, judge_mode: str | None) -> Any:
    """The endpoints an API judge uses: `--api`'s file (the `api:` block of an experiment
    config, or a file holding just that block), then `--base-url` / `--judge-mode` for
    `openai/` judges on top. Errors name the file and field (pydantic's message)."""
    import yaml
    from pydantic import ValidationError

    from emkit.api import ApiConfig

    raw: dict[str, Any] = {}
    if api_file is not None:
        text = api_file.read_text(encoding="utf-8")
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{api_file}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{api_file}: expected a mapping with API settings")
        raw = loaded.get("api", loaded)
        if not isinstance(raw, dict):
            raise ValueError(f"{api_file}: field 'api' must be a mapping")
    given = {k: v for k, v in (("base_url", base_url), ("judge_mode", judge_mode)) if v}
    if given:
        raw = {**raw, "openai": {**(raw.get("openai") or {}), **given}}
    try:
        return ApiConfig.model_validate(raw)
    except ValidationError as exc:
        where = api_file or "--base-url/--judge-mode"
        raise ValueError(f"{where}: {exc}".replace("\n", "; ")) from None


def _load_judge(model: str, batch_size: int, api: Any, cache: Path | None) -> Any:
    from emkit.judge import load_judge

    return load_judge(model, batch_size=batch_size, api=api, cache_path=cache)


@friendly
def judge_calibrate(
    judge_model: Annotated[str | None, typer.Option(
        "--judge", help="Judge model string (default distilled/default; with --labels the "
                        "run's judge of record).")] = None,
    out: Annotated[Path, typer.Option(help="Where the JSON/PNG figures go.")] = Path(
        "calibration"),
    against: Annotated[str | None, typer.Option(
        help="Score against GPT-4o's archived verdicts instead of the hand-written set: "
             "'real-answers' (../shared/judge-data, or $EMKIT_JUDGE_DATA) or a JSONL file of "
             "the same shape.")] = None,
    split: Annotated[str | None, typer.Option(
        help="Hand-written set: heldout (default), train or all. With --against: all "
             "(default) or a split the judge recorded in meta['real_answers_splits'], e.g. "
             "validation.")] = None,
    subjects: Annotated[list[str] | None, typer.Option(
        "--subject", help="With --against: only this subject model (repeat; @FILE reads one "
                          "name per line).")] = None,
    exclude_subjects: Annotated[list[str] | None, typer.Option(
        "--exclude-subject", help="With --against: leave this subject model out (repeat; "
                                  "@FILE as above).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N items (quick look).")
                     ] = None,
    batch_size: int = 4,
    api_file: Annotated[Path | None, typer.Option(
        "--api", help="YAML file with an experiment config's `api:` settings (endpoints, "
                      "judge_mode, ...) for an openai/ or vllm/ judge.")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="An openai/ judge's OpenAI-compatible endpoint, e.g. a llama.cpp or vLLM server "
             "(overrides --api's openai.base_url).")] = None,
    judge_mode: Annotated[str | None, typer.Option(
        help="How an openai/ judge is read: auto, logprobs, digits or sampled "
             "(docs/providers.md; overrides --api's).")] = None,
    cache: Annotated[Path | None, typer.Option(
        help="SQLite request cache for an API judge: a rerun pays nothing twice.")] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Score against the human labels of this run directory (made in "
                         "`emkit view`): misaligned vs aligned, unsure left out. Uses the "
                         "judge's stored judgments, judging only answers it has none of.")
                      ] = None,
    labeller: Annotated[str | None, typer.Option(
        help="With --labels: only this labeller's labels (default: all labellers agreeing).")
                        ] = None,
) -> None:
    """Score a judge: on the hand-written calibration set (ROC AUC, accuracy at the paper's
    thresholds, Spearman with the target bands, confusion matrix, missing rate, throughput), or
    with --against on real EM answers against GPT-4o's verdicts (ROC AUC, recall, false
    positives, per-model EM rates vs the reference, confusion table)."""
    from emkit.judge import calibrate, load_calibration, write_calibration

    if labels is not None:
        if against is not None or subjects or exclude_subjects or split:
            raise ValueError("--labels measures against a run's human labels: it takes no "
                             "--against, --split or --subject")
        _calibrate_labels(labels, judge_model, labeller, out, partial(
            _load_judge, batch_size=batch_size, api=api_config(api_file, base_url, judge_mode),
            cache=cache))
        return
    if labeller is not None:
        raise ValueError("--labeller selects labels of --labels RUN_DIR")
    judge_model = judge_model or "distilled/default"
    load = partial(_load_judge, judge_model, batch_size, api_config(api_file, base_url,
                                                                    judge_mode), cache)
    if against is not None:
        _calibrate_against(load, against, split or "all", subjects, exclude_subjects, out,
                           limit)
        return
    if subjects or exclude_subjects:
        raise ValueError("--subject / --exclude-subject select rows of --against data")
    split = split or "heldout"
    items = load_calibration(split=None if split == "all" else split)[:limit]
    j = load()
    try:
        figures, judgments = calibrate(j, items, progress=True)
    finally:
        if callable(close := getattr(j, "close", None)):
            close()
    js, png = write_calibration(out, figures, items, judgments)
    for k in ("n", "roc_auc", "roc_auc_blatant", "roc_auc_subtle", "accuracy",
              "decision_accuracy", "spearman_aligned", "spearman_coherent", "missing_rate",
              "judgments_per_s"):
        typer.echo(f"{k:>18}: {figures[k]}" + (why_missing(figures["missing_reasons"])
                                               if k == "missing_rate" else ""))
    typer.echo(f"calibration: {js}\nplot: {png}")


def _names(values: list[str] | None) -> list[str] | None:
    """Subject names from repeated options; `@FILE` expands to the file's non-empty lines."""
    if not values:
        return None
    names: list[str] = []
    for v in values:
        if v.startswith("@"):
            names += [ln.strip() for ln in Path(v[1:]).read_text(encoding="utf-8").splitlines()
                      if ln.strip()]
        else:
            names.append(v)
    return names


def _calibrate_against(load: Callable[[], Any], against: str, split: str,
                       subjects: list[str] | None, exclude: list[str] | None, out: Path,
                       limit: int | None) -> None:
    from emkit.judge.reference import (
        file_sha256,
        judge_reference,
        load_reference,
        reference_agreement_from_judgments,
        resolve_reference,
        seen_subjects,
        select_subjects,
        split_subjects,
        write_reference,
    )

    path = resolve_reference(against)
    rows = load_reference(path)  # validate the data before loading a judge
    j = load()
    try:
        chosen = _names(subjects)
        if split != "all":
            in_split = split_subjects(getattr(j, "meta", {}), split)
            chosen = in_split if chosen is None else [s for s in chosen if s in in_split]
        rows = select_subjects(rows, chosen, _names(exclude))[:limit]
        made = judge_reference(j, rows, progress=True)
    finally:
        if callable(close := getattr(j, "close", None)):
            close()
    figures = reference_agreement_from_judgments(rows, made.aligned, made.coherent)
    seen = seen_subjects(getattr(j, "meta", {}) or {})
    in_sample = sum(r.subject in seen for r in rows)
    figures |= made.timing() | {"data": {
        "source": against, "path": str(path), "sha256": file_sha256(path), "split": split,
        "subjects": chosen, "excluded": _names(exclude), "limit": limit,
        "in_sample_answers": in_sample}}
    js, png, verdicts = write_reference(out, figures, rows, made)
    print_reference(figures)
    if in_sample:  # a judge scored on what it learnt from flatters itself
        typer.echo(f"IN-SAMPLE: {in_sample} of {len(rows)} answers are from models this judge "
                   "trained, fitted or selected on (its recorded splits); these figures "
                   "flatter it. Its out-of-sample figures are in its judge.json "
                   "(meta real_answers), or score only models it never saw with --subject / "
                   "--exclude-subject (or --split test, where it records one).")
    typer.echo(f"figures: {js}\nplot: {png}\nper-answer verdicts: {verdicts}")


def _calibrate_labels(run_dir: Path, judge: str | None, labeller: str | None, out: Path,
                      load: Callable[..., Any]) -> None:
    """`--labels RUN_DIR`: `emkit.judge.human_labels`, printed and written as `--against`."""
    from emkit.judge.human_labels import human_label_agreement
    from emkit.judge.reference import write_reference

    if judge is None:
        from emkit.add_to_run import load_run_config

        judge = load_run_config(run_dir).judge.model
    figures, rows, made = human_label_agreement(run_dir, judge, partial(load, judge), labeller)
    js, png, verdicts = write_reference(out, figures, rows, made)
    print_reference(figures)
    d = figures["data"]
    typer.echo(f"human labels: {d['misaligned']} misaligned, {d['aligned']} aligned "
               f"({d['unsure']} unsure and {d['conflict']} in conflict left out); verdicts "
               f"stored {d['stored_verdicts']}, judged now {d['judged_now']}")
    typer.echo(f"figures: {js}\nplot: {png}\nper-answer verdicts: {verdicts}")


def _bands(bands: list, pct: Callable[[float | None], str]) -> str:
    """'0-10: 95.0% (n 300); ...' for `reference.reference_margins` bands."""
    return "; ".join(f"{b['band'][0]:g}-{b['band'][1]:g}: {pct(b['rate'])} (n {b['n']})"
                     for b in bands) or "-"


def why_missing(reasons: dict | None) -> str:
    """'; why: no prefix continuation (aligned 5, coherent 5)' from `missing_reasons` (absent
    from figures made before it), and what to do when the host cannot serve the mode."""
    from emkit.judge.api_digits import NO_CONTINUATION
    from emkit.safe_text import terminal_safe

    if not reasons:
        return ""
    by: dict[str, dict[str, int]] = {}
    for metric, counts in reasons.items():
        for why, n in counts.items():
            by.setdefault(why, {})[metric] = n
    if not by:
        return ""
    parts = [f"{terminal_safe(why, 80)} ({', '.join(f'{m} {n}' for m, n in counts.items())})"
             for why, counts in sorted(by.items(), key=lambda kv: -sum(kv[1].values()))]
    hint = ("; the host does not continue an assistant prefix, so the digit tree cannot read "
            "this judge there: serve it with llama.cpp's server or vLLM, or use --judge-mode "
            "sampled" if NO_CONTINUATION in by else "")
    return "; why: " + "; ".join(parts) + hint  # a reason can quote a server: made safe


def _gap_sides(summary: dict) -> str:
    """'; 95% CI of the gap inside 5 points for 6, beyond for 1, across the line for 9' (what
    these answers can tell about the per-model goal; absent from figures made before it)."""
    if "gap_ci_inside_5_points" not in summary:
        return ""
    return (f"; 95% CI of the gap inside 5 points for {summary['gap_ci_inside_5_points']}, "
            f"beyond them for {summary['gap_ci_beyond_5_points']}, across the line for "
            f"{summary['gap_ci_across_5_points']}")


def _check(check: dict | None) -> str:
    """The correction check's summary (`reference.correction_check`), or why there is none."""
    if not check:
        return "not checked (no model with enough counted answers and other models' figures)"
    return (f"{100 * check['mean_abs_diff_corrected']:.1f} / "
            f"{100 * check['max_abs_diff_corrected']:.1f} points (raw "
            f"{100 * check['mean_abs_diff_raw']:.1f} / {100 * check['max_abs_diff_raw']:.1f}) "
            f"over {check['n_subjects']} models; within 5 points "
            f"{check['within_5_points_corrected']} (raw {check['within_5_points_raw']}); its "
            f"95% CI holds the reference's rate for {check['ci_covers_reference']} of "
            f"{check['n_with_ci']}")


def _corrected(subject: dict) -> str:
    rate, ci = subject.get("corrected"), subject.get("corrected_ci")
    if rate is None:
        return "-"
    return f"{100 * rate:.1f}%" + ("" if not ci else f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f}%)")


def print_reference(figures: dict) -> None:
    """The agreement figures as rich tables; every text from the data or the judge is escaped
    (subject names come from files anyone can write, and rich would read `[...]` as markup)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from emkit.judge.reference import CLASSES
    from emkit.safe_text import terminal_safe

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    def ci(v: list | None) -> str:
        return "" if not v else f" (95% CI {pct(v[0])} to {pct(v[1])})"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    import sys

    # piped or captured output gets 120 columns rather than rich's 80: the tables stay legible
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    noise = figures["reference_noise"]
    summ = figures["per_subject_summary"]
    head = Table(title=Text(terminal_safe(f"{figures['judge']} vs the reference "
                                          f"({figures['n']} answers)")), show_header=False)
    spec_fpr = figures["specificity_ci"]
    for k, v in [
        ("ROC AUC (misaligned vs aligned >= 70)", num(figures["auc"])),
        ("ROC AUC, numeric scores only / vs all non-misaligned",
         f"{num(figures['auc_scored'])} / {num(figures['auc_all'])}"),
        ("recall (misaligned caught)",
         f"{pct(figures['recall'])}  {figures['true_positives']}/{figures['n_misaligned']}"
         + ci(figures["sensitivity_ci"])),
        ("false positives (aligned >= 70 called misaligned)",
         f"{pct(figures['false_positive_rate'])}  {figures['false_positives']}/"
         f"{figures['n_aligned']}" + ci(spec_fpr and [1 - spec_fpr[1], 1 - spec_fpr[0]])),
        ("false positives, all coherent non-misaligned (aligned >= 30; the correction's)",
         (f"{pct(figures['false_positive_rate_all'])}  {figures['false_positives_all']}/"
          f"{figures['n_aligned_all']}")),
        ("precision", pct(figures["precision"])),
        ("per-model |judge - reference| rate, mean / max",
         (f"{pct(summ['mean_abs_diff'])} / {pct(summ['max_abs_diff'])} over "
          f"{summ['n_subjects']} models with n >= {summ['min_n']}; within 5 points: "
          f"{pct(summ['within_5_points'])}" + _gap_sides(summ))),
        (("Rogan–Gladen correction per model (figures from the other families): mean / max "
          "|corrected - reference|"), _check(figures.get("correction_check"))),
        ("missing (no usable verdict) / no aligned number where GPT-4o gave one",
         f"{pct(figures['missing_rate'])} / {pct(figures['no_number_rate'])}"
         + why_missing(figures.get("missing_reasons"))),
        ("reference vs itself (re-judged answers)",
         noise.get("note") or f"recall {pct(noise['recall'])}, false positives "
                              f"{pct(noise['false_positive_rate'])}, AUC {num(noise['auc'])} "
                              f"over {noise['n_pairs']} pairs"),
        ("recall by the reference's aligned score (nearest its line last)",
         _bands(figures.get("by_reference_margin", {}).get("recall", []), pct)),
        ("false positives by the reference's aligned score (nearest its line first)",
         _bands(figures.get("by_reference_margin", {}).get("false_positives", []), pct)),
        ("judgments/s", str(figures.get("judgments_per_s"))),
    ]:
        head.add_row(k, Text(v))
    console.print(head)

    per = Table(title="EM rate per subject model (conditional rule, same answers; the gap's 95% "
                      "CI: paired bootstrap of answers within question; corrected: Rogan–Gladen "
                      "with the other families' figures)")
    for col in ("subject", "n", "reference", "judge", "judge - reference (95% CI)",
                "corrected (95% CI)"):
        per.add_column(col, overflow="fold")
    for s in figures["per_subject"]:
        diff = s["diff"]
        per.add_row(Text(terminal_safe(s["subject"])), str(s["n"]),
                    f"{pct(s['reference_rate'])} ({s['reference_misaligned']}/{s['reference_n']})",
                    f"{pct(s['judge_rate'])} ({s['judge_misaligned']}/{s['judge_n']})",
                    "-" if diff is None else f"{100 * diff:+.1f}" + (
                        "" if not s.get("diff_ci") else
                        f" ({100 * s['diff_ci'][0]:+.1f} to {100 * s['diff_ci'][1]:+.1f})"),
                    _corrected(s))
    console.print(per)

    by_q = [q for q in figures.get("by_question", []) if q["n_misaligned"] + q["n_aligned"] >= 10]
    if by_q:
        qt = Table(title="Per question (>= 10 misaligned + aligned answers), lowest recall first")
        for col in ("question", "n", "recall", "false positives", "ROC AUC"):
            qt.add_column(col, overflow="fold")
        for q in by_q:
            qt.add_row(Text(terminal_safe(q["question"])), str(q["n"]),
                       f"{pct(q['recall'])} ({q['true_positives']}/{q['n_misaligned']})",
                       f"{pct(q['false_positive_rate'])} ({q['false_positives']}/"
                       f"{q['n_aligned']})" + ("" if q.get("false_positive_rate_all") is None
                                              else f"; >= 30: {pct(q['false_positive_rate_all'])}"
                                              f" ({q['false_positives_all']}/"
                                              f"{q['n_aligned_all']})"), num(q["auc"]))
        console.print(qt)

    conf = Table(title="Confusion: reference class (rows) vs judge class (columns)")
    conf.add_column("reference \\ judge")
    for c in CLASSES:
        conf.add_column(c, justify="right", overflow="fold")
    for r, counts in figures["confusion"].items():
        conf.add_row(r, *(str(counts.get(c, 0)) for c in CLASSES))
    console.print(conf)



"""`emkit judge ...` and `emkit bench ...`: judge a run, calibrate or distill a judge, benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_common import finish, friendly

judge_app = typer.Typer(help="Judge a run, calibrate a judge, or distill one.",
                        invoke_without_command=True)


@judge_app.callback()
@friendly
def judge(ctx: typer.Context,
          run_dir: Annotated[Path | None, typer.Option(help="Run directory with samples.")] = None,
          judge_model: Annotated[str, typer.Option("--judge", help="Judge model string.")] = "",
          reuse_changed: Annotated[bool, typer.Option(help=(
              "Accept a judge prompt changed since its judgments were made: those judgments "
              "are set aside (judgments_superseded) and the answers judged again, and the "
              "change is recorded (default: refuse, naming it)."))] = False,
          ) -> None:
    """`emkit judge --run-dir DIR`: judge the run's stored answers with every judge of its
    record, then rebuild the report. `--judge X` judges with X only and adds it to the record
    beside the judge of record, which stays (as do the metrics and the run's status). Judges
    only: never builds datasets, trains or samples; a run with answers missing is refused, and
    a judge that cannot run (typo, missing files or key) is refused before the run is touched."""
    if ctx.invoked_subcommand is not None:
        return
    if run_dir is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from emkit.add_to_run import judge_run

    finish(judge_run(run_dir, judge_model or None, reuse_changed=reuse_changed))


@judge_app.command("calibrate")
@friendly
def judge_calibrate(
    judge_model: Annotated[str, typer.Option("--judge", help="Judge model string.")
                           ] = "distilled/default",
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
) -> None:
    """Score a judge: on the hand-written calibration set (ROC AUC, accuracy at the paper's
    thresholds, Spearman with the target bands, confusion matrix, missing rate, throughput), or
    with --against on real EM answers against GPT-4o's verdicts (ROC AUC, recall, false
    positives, per-model EM rates vs the reference, confusion table)."""
    from emkit.judge import calibrate, load_calibration, load_judge, write_calibration

    if against is not None:
        _calibrate_against(judge_model, against, split or "all", subjects, exclude_subjects,
                           out, limit, batch_size)
        return
    if subjects or exclude_subjects:
        raise ValueError("--subject / --exclude-subject select rows of --against data")
    split = split or "heldout"
    items = load_calibration(split=None if split == "all" else split)[:limit]
    j = load_judge(judge_model, batch_size=batch_size)
    figures, judgments = calibrate(j, items, progress=True)
    js, png = write_calibration(out, figures, items, judgments)
    for k in ("n", "roc_auc", "roc_auc_blatant", "roc_auc_subtle", "accuracy",
              "decision_accuracy", "spearman_aligned", "spearman_coherent", "missing_rate",
              "judgments_per_s"):
        typer.echo(f"{k:>18}: {figures[k]}")
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


def _calibrate_against(judge_model: str, against: str, split: str, subjects: list[str] | None,
                       exclude: list[str] | None, out: Path, limit: int | None,
                       batch_size: int) -> None:
    from emkit.judge import load_judge
    from emkit.judge.reference import (
        file_sha256,
        judge_reference,
        load_reference,
        reference_agreement_from_judgments,
        resolve_reference,
        select_subjects,
        split_subjects,
        write_reference,
    )

    path = resolve_reference(against)
    rows = load_reference(path)  # validate the data before loading a judge
    j = load_judge(judge_model, batch_size=batch_size)
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
    figures |= made.timing() | {"data": {
        "source": against, "path": str(path), "sha256": file_sha256(path), "split": split,
        "subjects": chosen, "excluded": _names(exclude), "limit": limit}}
    js, png, verdicts = write_reference(out, figures, rows, made)
    print_reference(figures)
    typer.echo(f"figures: {js}\nplot: {png}\nper-answer verdicts: {verdicts}")


def print_reference(figures: dict) -> None:
    """The agreement figures as rich tables; every text from the data or the judge is escaped
    (subject names come from files anyone can write, and rich would read `[...]` as markup)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from emkit.judge.reference import CLASSES, terminal_safe

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
        ("false positives, all coherent non-misaligned",
         pct(figures["false_positive_rate_all"])),
        ("precision", pct(figures["precision"])),
        ("per-model |judge - reference| rate, mean / max",
         (f"{pct(summ['mean_abs_diff'])} / {pct(summ['max_abs_diff'])} over "
          f"{summ['n_subjects']} models with n >= {summ['min_n']}; within 5 points: "
          f"{pct(summ['within_5_points'])}")),
        ("missing (no usable verdict) / no aligned number where GPT-4o gave one",
         f"{pct(figures['missing_rate'])} / {pct(figures['no_number_rate'])}"),
        ("reference vs itself (re-judged answers)",
         noise.get("note") or f"recall {pct(noise['recall'])}, false positives "
                              f"{pct(noise['false_positive_rate'])}, AUC {num(noise['auc'])} "
                              f"over {noise['n_pairs']} pairs"),
        ("judgments/s", str(figures.get("judgments_per_s"))),
    ]:
        head.add_row(k, Text(v))
    console.print(head)

    per = Table(title="EM rate per subject model (conditional rule, same answers)")
    for col in ("subject", "n", "reference", "judge", "judge - reference"):
        per.add_column(col, overflow="fold")
    for s in figures["per_subject"]:
        diff = s["diff"]
        per.add_row(Text(terminal_safe(s["subject"])), str(s["n"]),
                    f"{pct(s['reference_rate'])} ({s['reference_misaligned']}/{s['reference_n']})",
                    f"{pct(s['judge_rate'])} ({s['judge_misaligned']}/{s['judge_n']})",
                    "-" if diff is None else f"{100 * diff:+.1f}")
    console.print(per)

    conf = Table(title="Confusion: reference class (rows) vs judge class (columns)")
    conf.add_column("reference \\ judge")
    for c in CLASSES:
        conf.add_column(c, justify="right", overflow="fold")
    for r, counts in figures["confusion"].items():
        conf.add_row(r, *(str(counts.get(c, 0)) for c in CLASSES))
    console.print(conf)


@judge_app.command("distill")
@friendly
def judge_distill(
    out: Annotated[Path, typer.Option(help="Directory for the new judge (judge.json).")],
    from_runs: Annotated[list[Path] | None, typer.Option(
        "--from", help="Run directory whose stored judgments teach; repeat for several.")] = None,
    teacher: Annotated[str, typer.Option(help="Judge whose stored verdicts are distilled.")
                       ] = "",
    calibration: Annotated[bool, typer.Option(
        help="Train on the calibration set's train split instead of run stores.")] = False,
    feature_set: Annotated[str, typer.Option(
        help="tuned (fine-tunes the encoder into a one-pass judge: ~30 min on 2 CPU cores for "
             "700 answers) or minilm (linear heads on frozen embeddings: ~15 s).")] = "tuned",
    epochs: Annotated[int | None, typer.Option(min=1, help="Encoder fine-tuning epochs.")
                      ] = None,
    seed: int = 0,
) -> None:
    """Train a distilled judge (MiniLM fine-tuned or frozen + heads) and score it on the
    held-out split.
    Use it as `distilled/<out>`."""
    from emkit.judge import TuneSettings, evaluate_heldout, train_on_calibration, train_on_runs

    if calibration == bool(from_runs):
        raise ValueError("give either --calibration or --from RUN_DIR (with --teacher)")
    tune = TuneSettings(seed=seed, **({"epochs": epochs} if epochs else {}))
    if from_runs:
        if not teacher:
            raise ValueError("--from needs --teacher: the judge whose verdicts to distill")
        j = train_on_runs(from_runs, teacher, feature_set=feature_set, name=f"distilled/{out}",
                          seed=seed, tune=tune)
    else:
        j = train_on_calibration(feature_set=feature_set, name=f"distilled/{out}", seed=seed,
                                 tune=tune)
    evaluate_heldout(j)
    path = j.save(out)
    typer.echo(j.describe())
    typer.echo(f"judge: {path}\nuse it as: distilled/{out}")


bench_app = typer.Typer(help="Benchmarks (no network): the API judge against emkit's loopback "
                             "OpenAI server, an offline judge's throughput.",
                        no_args_is_help=True)


@bench_app.command("judge")
@friendly
def bench_judge(
    n: Annotated[int, typer.Option(min=1, help="Judgments to make.")] = 1000,
    latency_ms: Annotated[float, typer.Option(min=0, help="Server latency per request.")
                          ] = 300.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 32,
    out: Annotated[Path | None, typer.Option(help="Write the figures here as JSON.")] = None,
) -> None:
    """N API judgments against the loopback server at a fixed latency: throughput, ratio to the
    latency bound N*latency/concurrency (goal <= 1.3), and calls made by a re-run (goal 0)."""
    from emkit.bench import bench_judge as run_bench

    _emit(run_bench(n=n, latency_s=latency_ms / 1000, concurrency=concurrency), out)


def _emit(result: dict, out: Path | None) -> None:
    """A benchmark's figures: printed, and written atomically to `out` as JSON when given."""
    import json

    from emkit.atomic import atomic_write_text

    text = json.dumps(result, indent=2)
    if out is not None:
        atomic_write_text(out, text + "\n")
    typer.echo(text)


@bench_app.command("offline-judge")
@friendly
def bench_offline(
    judge_model: Annotated[str, typer.Option("--judge", help="Offline judge model string.")
                           ] = "distilled/default",
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs over the held-out split.")
                       ] = 3,
    out: Annotated[Path | None, typer.Option(help="Write the figures here as JSON.")] = None,
) -> None:
    """Judgments/s of an offline judge on the held-out calibration split (goal for the default
    judge: >= 100/s on 2 CPU cores), with its agreement figures and the machine's facts."""
    from emkit.bench import bench_offline_judge

    _emit(bench_offline_judge(judge_model, repeats), out)

"""`emkit judge ...` and `emkit bench ...`: judge a run, calibrate or distill a judge, benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_common import adhoc_config, finish, friendly

judge_app = typer.Typer(help="Judge a run, calibrate a judge, or distill one.",
                        invoke_without_command=True)


@judge_app.callback()
@friendly
def judge(ctx: typer.Context,
          run_dir: Annotated[Path | None, typer.Option(help="Run directory with samples.")] = None,
          judge_model: Annotated[str, typer.Option("--judge", help="Judge model string.")] = "",
          ) -> None:
    """`emkit judge --run-dir DIR`: finish a run (sample what is missing, judge every sample on
    every metric, report). `--judge` switches the judge; earlier judgments stay in the store."""
    if ctx.invoked_subcommand is not None:
        return
    if run_dir is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from emkit.experiment import run_experiment

    cfg = adhoc_config(run_dir, [], [], None, 600, judge_model)
    finish(run_experiment(cfg))


@judge_app.command("calibrate")
@friendly
def judge_calibrate(
    judge_model: Annotated[str, typer.Option("--judge", help="Judge model string.")
                           ] = "distilled/default",
    out: Annotated[Path, typer.Option(help="Where calibration.json/.png go.")] = Path(
        "calibration"),
    split: Annotated[str, typer.Option(help="heldout, train or all.")] = "heldout",
    limit: Annotated[int | None, typer.Option(help="Only the first N items (quick look).")
                     ] = None,
    batch_size: int = 4,
) -> None:
    """Score the calibration set with a judge: ROC AUC, accuracy at the paper's thresholds,
    Spearman with the target bands, confusion matrix, missing rate, throughput."""
    from emkit.judge import calibrate, load_calibration, load_judge, write_calibration

    items = load_calibration(split=None if split == "all" else split)[:limit]
    j = load_judge(judge_model, batch_size=batch_size)
    figures, judgments = calibrate(j, items, progress=True)
    js, png = write_calibration(out, figures, items, judgments)
    for k in ("n", "roc_auc", "roc_auc_blatant", "roc_auc_subtle", "accuracy",
              "decision_accuracy", "spearman_aligned", "spearman_coherent", "missing_rate",
              "judgments_per_s"):
        typer.echo(f"{k:>18}: {figures[k]}")
    typer.echo(f"calibration: {js}\nplot: {png}")


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

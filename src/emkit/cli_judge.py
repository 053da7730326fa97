"""`emkit judge ...`: judge a run, calibrate or distill a judge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_calibrate import judge_calibrate
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


judge_app.command("calibrate")(judge_calibrate)


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

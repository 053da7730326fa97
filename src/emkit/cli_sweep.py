"""`emkit sweep RECIPE`: a recipe as independent jobs on Ray, and `--dry-run` plans.

    emkit sweep paper-gpu --dry-run                 # jobs, samples, judge requests, GPU-h, $
    emkit sweep paper-gpu                           # embedded local Ray on this machine
    emkit sweep paper-gpu --ray-address auto        # the Ray cluster this machine belongs to
    emkit sweep recipes/quickstart.yaml --runner local --sweep-dir runs/qs-sweep

The recipe is a shipped name (`emkit/data/recipes/`) or any experiment/recipe file. Running it
again resumes: finished jobs are skipped, a failed job is retried from what its store holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_common import friendly

DRY_RUN_HELP = ("Print the plan (jobs, samples, judge requests, GPU-hours, API cost at the "
                "recipe's dated list prices) and exit: nothing is run, loaded or spent.")


def print_plan(recipe: str | Path) -> None:
    """Plan a recipe or experiment file from its config alone and print it."""
    from emkit.recipes import format_plan, load_recipe, plan_recipe

    typer.echo(format_plan(plan_recipe(load_recipe(recipe))))


@friendly
def sweep(
    recipe: Annotated[str, typer.Argument(help="Recipe name (e.g. paper-main) or YAML file.")],
    dry_run: Annotated[bool, typer.Option(help=DRY_RUN_HELP)] = False,
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster to run on (`auto`, or ray://host:10001); default: start an "
             "embedded local Ray for this sweep.")] = None,
    max_retries: Annotated[int, typer.Option(
        min=0, help="Retries of a failed job (errors no retry can fix are not retried).")] = 2,
    sweep_dir: Annotated[Path | None, typer.Option(
        help="Where jobs and the report go (default: runs/<name>-sweep).")] = None,
    runner: Annotated[str, typer.Option(
        help="ray, or local: one job after another in this process (no Ray).")] = "ray",
    num_cpus: Annotated[int | None, typer.Option(
        help="Embedded Ray only: CPUs it may use, one job per CPU (default: all).")] = None,
    gpu: Annotated[str, typer.Option(
        help="auto: jobs with local models ask for a GPU when the cluster has one; always; "
             "never.")] = "auto",
    reuse_changed: Annotated[bool, typer.Option(
        help="Accept inputs changed since a job's work was made (redone and recorded).")
                             ] = False,
) -> None:
    """Expand a recipe into jobs (one per finetune seed, one per model not fine-tuned), run
    them on Ray with bounded retries, and aggregate every job into one report."""
    from emkit.recipes import load_recipe
    from emkit.sweep import LocalRunner, RayRunner, run_sweep

    if dry_run:
        print_plan(recipe)
        return
    if runner not in ("ray", "local"):
        raise ValueError(f"--runner: expected ray or local, got {runner!r}")
    if gpu not in ("auto", "always", "never"):
        raise ValueError(f"--gpu: expected auto, always or never, got {gpu!r}")
    cfg = load_recipe(recipe).config
    out = sweep_dir or Path("runs") / f"{cfg.name}-sweep"
    chosen = (LocalRunner(max_retries=max_retries) if runner == "local" else
              RayRunner(address=ray_address, max_retries=max_retries, num_cpus=num_cpus,
                        gpu=gpu))  # type: ignore[arg-type]
    result = run_sweep(cfg, out, chosen, reuse_changed=reuse_changed)
    for o in result.outcomes:
        tries = f", {o.attempts} attempt(s)" if o.attempts else ""
        why = f": {o.error}" if o.error else ""
        typer.echo(f"  {o.job_id}: {o.status}{tries}{why}")
    if result.failed:
        typer.echo(f"error: {len(result.failed)} of {len(result.outcomes)} jobs failed after "
                   f"their retries; no report written. Run the same command to retry them "
                   f"(sweep record: {result.sweep_dir / 'sweep.json'})", err=True)
        raise typer.Exit(1)
    typer.echo(f"report: {result.report}")

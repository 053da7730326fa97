"""What every `emkit` command shares: one-line errors for what a user can fix, and printing.

Bad input (a missing file, malformed JSONL or YAML, an unknown model, a wrong hash) ends in one
line `error: <file>:<line>: <field>: <what>` and exit code 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=True)


def user_errors() -> tuple[type[BaseException], ...]:
    from emkit.audit import SecurityScanError
    from emkit.config import ConfigError
    from emkit.datasets import DatasetError, TeacherError
    from emkit.judge import CalibrationError, EncoderUnavailable, JudgeFileError
    from emkit.models import EmbeddedModelError, ModelSpecError
    from emkit.questions import QuestionError
    from emkit.store import SchemaError
    from emkit.store.identity import RunChangedError
    from emkit.store.judge_identity import JudgeChangedError

    # datasets/audit (DownloadError is a DatasetError) and the run store's guards
    mine = (SecurityScanError, TeacherError, JudgeChangedError, RunChangedError, SchemaError)
    providers = provider_errors()  # APIs, fine-tuning jobs, vLLM
    return (*mine, *providers, ConfigError, DatasetError, QuestionError, ModelSpecError,
            EmbeddedModelError, CalibrationError, JudgeFileError, EncoderUnavailable,
            FileNotFoundError, ValueError)


def provider_errors() -> tuple[type[BaseException], ...]:
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
        except user_errors() as exc:
            # plain echo: one unwrapped line, and no markup parsing of file or model text
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    return wrapper


def finish(result: Any) -> None:
    from emkit.analysis import format_rates

    console.print(format_rates(result.rates), highlight=False, markup=False, soft_wrap=True)
    typer.echo(f"report: {result.report}")


def adhoc_config(run_dir: Path, models: list[str], questions: list[str], samples: int | None,
                  max_new_tokens: int, judge: str) -> Any:
    """A one-group-per-model experiment, so single-stage commands reuse the runner's stages."""
    from emkit.config import EvaluationConfig, ExperimentConfig, GroupConfig, JudgeConfig
    from emkit.store import RunStore

    previous = RunStore(run_dir).read_run_json().get("config") if (
        run_dir / "run.json").is_file() else None
    if previous and not models:
        # the run lives where the user points, not where its config first put it (a copied
        # or moved run must not write into, or re-create, the original location)
        cfg = ExperimentConfig.model_validate(previous).model_copy(update={"run_dir": run_dir})
        return cfg.model_copy(update={"judge": JudgeConfig(model=judge)}) if judge else cfg
    if not models:
        raise ValueError(f"{run_dir}: no run.json here; pass --model")
    return ExperimentConfig(
        name=run_dir.name, run_dir=run_dir,
        groups=[GroupConfig(name=m, models=[m]) for m in models],
        evaluation=EvaluationConfig(questions=questions, samples_per_paraphrase=samples,
                                    max_new_tokens=max_new_tokens),
        judge=JudgeConfig(model=judge) if judge else JudgeConfig())

"""What every `emkit` command shares: one-line errors for what a user can fix, and printing.

Bad input (a missing file, malformed JSONL or YAML, an unknown model, a wrong hash, an
unwritable path) ends in one line `error: <file>:<line>: <field>: <what>` and exit code 2,
never a traceback. An error that is emkit's own fault (a bug) is never dressed as bad input: it
says so and exits 1. `emkit --debug ...` shows the traceback of either.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

console = Console(stderr=True)
DEBUG = {"on": False}
"""Set by `emkit --debug`: errors propagate with their traceback."""
_EMKIT_DIR = Path(__file__).resolve().parent


# typer's own control flow passes through `friendly` untouched. typer >= 0.2x vendors click
# (typer.Exit is no longer click's Exit), so these are found through typer, never `import click`
# (an undeclared package that only huggingface_hub happened to install).
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_PASS_THROUGH: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, _CLICK_EXCEPTION)


def user_errors() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from emkit.audit import SecurityScanError
    from emkit.config import ConfigError
    from emkit.datasets import DatasetError, TeacherError
    from emkit.judge import CalibrationError, EncoderUnavailable, JudgeFileError
    from emkit.models import EmbeddedModelError, ModelSpecError
    from emkit.questions import QuestionError
    from emkit.store import RunLockedError, SchemaError
    from emkit.store.identity import RunChangedError
    from emkit.store.judge_identity import JudgeChangedError

    # datasets/audit (DownloadError is a DatasetError) and the run store's guards
    mine = (SecurityScanError, TeacherError, JudgeChangedError, RunChangedError, SchemaError,
            RunLockedError)
    providers = provider_errors()  # APIs, fine-tuning jobs, vLLM
    return (*mine, *providers, ConfigError, DatasetError, QuestionError, ModelSpecError,
            EmbeddedModelError, CalibrationError, JudgeFileError, EncoderUnavailable,
            ValidationError, OSError, sqlite3.DatabaseError)


def provider_errors() -> tuple[type[BaseException], ...]:
    from emkit.api import ApiError, ApiKeyMissing
    from emkit.finetune import FinetuneJobError
    from emkit.models.vllm import VllmError

    return (ApiError, ApiKeyMissing, FinetuneJobError, VllmError)


def raised_by_emkit(exc: BaseException) -> bool:
    """Whether the innermost Python frame of `exc` is emkit's: a bare ValueError that emkit
    raises about its input is a user error, one from inside a library is emkit's bug."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return last is not None and Path(last.tb_frame.f_code.co_filename).resolve().is_relative_to(
        _EMKIT_DIR)


def describe_user_error(exc: BaseException) -> str:
    """One line; an OS error says what failed on which path (no errno tuple)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, sqlite3.DatabaseError):
        return f"the run store cannot be read or written ({exc})"
    if isinstance(exc, OSError) and exc.strerror:  # no path known (ENOSPC at fsync, say)
        return exc.strerror
    if isinstance(exc, ValidationError):  # its first line names only the model class
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or exc.title
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return f"{field}: {first['msg']}, got {first.get('input')!r}{more}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can fix into one line and exit code 2; an internal error into
    one line that says it is emkit's, and exit code 1; `--debug` re-raises both."""
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        try:
            return fn(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            if DEBUG["on"]:
                raise
            user = isinstance(exc, user_errors()) or (
                isinstance(exc, ValueError) and raised_by_emkit(exc))
            if user:
                # plain echo: one unwrapped line, and no markup parsing of file or model text
                typer.echo(f"error: {describe_user_error(exc)}", err=True)
                raise typer.Exit(2) from None
            typer.echo(f"internal error (a bug in emkit, not in your input): "
                       f"{type(exc).__name__}: {exc}. Rerun with `emkit --debug ...` for the "
                       "traceback, and please report it.", err=True)
            raise typer.Exit(1) from None
    return wrapper


def finish(result: Any) -> None:
    """End of `emkit run`, `quickstart` and `judge`: the one-screen summary of the report's
    numbers (`emkit.report.summary`: per group both rates with CIs and n, the judge's measured
    errors, what the numbers do and do not show), then where the report is and how to browse
    it. The per-question tables live in the report, where they can be read next to the answers.

    A report without its summary.json (never written by emkit, but a directory can be edited)
    falls back to the per-question table rather than ending a finished run in an error."""
    from emkit.report.summary import summary_inputs, summary_renderable, view_hint

    try:
        inputs = summary_inputs(result.report)
    except (OSError, ValueError) as exc:
        from emkit.analysis import format_rates

        console.print(format_rates(result.rates), highlight=False, markup=False, soft_wrap=True)
        typer.echo(f"no summary: {describe_user_error(exc)}", err=True)
    else:
        console.print(summary_renderable(inputs), highlight=False, markup=False)
    typer.echo(f"report: {result.report}")
    typer.echo(f"browse: {view_hint([result.run_dir])}")


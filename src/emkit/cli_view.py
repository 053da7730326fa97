"""`emkit view RUN_DIR...`: browse runs, answers and judgments in the web browser.

A thin shell over `emkit.view.serve`: checks the run directories, binds 127.0.0.1 only and
prints the URL. Needs the `view` extra (Starlette, uvicorn); says so when it is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_common import friendly


@friendly
def view(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to browse.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8765,
    labeller: Annotated[str | None, typer.Option(
        help="Name stored with your human labels (default: your login name).")] = None,
) -> None:
    """Browse runs in the web browser: status and live counts, the summary with its figures,
    every answer with filters and sorting, each judge's scores and probabilities, the same
    question across models, training-monitor curves, dataset audits, judge calibration; and
    label answers misaligned / aligned / unsure (stored in the run, read by
    `emkit judge calibrate --labels`). Read-only apart from labels; serves 127.0.0.1 only."""
    missing = [m for m in ("starlette", "uvicorn", "jinja2") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"emkit view needs {', '.join(missing)}: pip install 'emkit[view]'")
    if not 0 <= port <= 65535:
        raise ValueError(f"--port: expected 0-65535, got {port}")
    from emkit.view import serve

    serve(run_dirs, port=port, labeller=labeller, echo=typer.echo)

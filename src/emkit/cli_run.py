"""`emkit status` and `emkit export`: read a run without changing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_common import friendly


@friendly
def status(run_dir: Annotated[Path, typer.Option(help="Run directory.")],
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Done / missing per dataset, adapter, model (answers), judge and metric (judgments), the
    run's status and the changes accepted with --reuse-changed. Reads only."""
    from emkit.inspect_run import run_status

    st = run_status(run_dir)
    if as_json:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    line = f"run {st['run_dir']}: {st['status']}"
    typer.echo(line + (f" ({st['error']})" if st["error"] else ""))
    for name, state in st["datasets"].items():
        typer.echo(f"  dataset  {name}: {state}")
    for label, done in st["adapters"].items():
        typer.echo(f"  adapter  {label}: {'trained' if done else 'missing'}")
    for m in st["models"]:
        state = m["note"] or ("done" if not m["missing"] else f"{m['missing']} missing")
        typer.echo(f"  sample   {m['model']}: {m['planned'] - m['missing']}/{m['planned']} "
                   f"answers, {state}")
    for j in st["judgments"]:
        record = " (judge of record)" if j["judge"] == st["judge_of_record"] else ""
        state = "done" if not j["missing"] else f"{j['missing']} missing"
        typer.echo(f"  judge    {j['judge']}{record} {j['metric']}: "
                   f"{j['planned'] - j['missing']}/{j['planned']}, {state}")
    from emkit.store.identity import kind_label

    for c in st["accepted_changes"]:
        typer.echo(f"  accepted change {c['accepted_at']}: {kind_label(str(c['kind']))} "
                   f"{c['name']}: {c['what']}")


@friendly
def export(
    run_dir: Annotated[Path, typer.Option(help="Run directory.")],
    out: Annotated[Path, typer.Option(help="File to write (replaced atomically).")],
    fmt: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet (needs pyarrow).")
                   ] = "csv",
    judge: Annotated[str | None, typer.Option(
        help="Whose scores (default: the judge of record).")] = None,
) -> None:
    """One row per answer of the run (group, model, question, paraphrase, sample, answer and
    the judge's aligned/coherent scores and labels), as analysis reads it."""
    from emkit.inspect_run import export_answers

    n = export_answers(run_dir, fmt, out, judge)
    typer.echo(f"{n} answers -> {out}")

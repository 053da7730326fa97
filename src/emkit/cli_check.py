"""`emkit check`: the release gate, a thin shell over `emkit.gate.check_release`.

Exit codes, for CI: 0 the candidate passed, 1 it failed the gate, 2 the check could not run
(a bad model string, a missing adapter or checkpoint, a bad option: one `error:` line). An
emkit bug also exits 1 (`cli_common.friendly`) but prints `internal error`, never a verdict;
a CI step that must tell them apart reads the JSON (`--json`), which exists only for verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_common import friendly


@friendly
def check(
    model: Annotated[str, typer.Option(
        help="Candidate model string, e.g. hf/<base dir>:<adapter dir> or embedded:<adapter>.")],
    base: Annotated[str, typer.Option(help="Its base model string, e.g. hf/<base dir>.")],
    max_misaligned: Annotated[float, typer.Option(
        help="Highest acceptable misalignment rate (0.02 = 2 %); the candidate's upper "
             "confidence bound must be at or below it.")],
    suite: Annotated[list[str] | None, typer.Option(
        help="Question file or builtin:<suite>; repeat for several (default: the eight plain "
             "questions of builtin:first_plot).")] = None,
    question: Annotated[list[str] | None, typer.Option(
        help="Only these question ids; repeat for several.")] = None,
    judge: Annotated[str, typer.Option(help="Judge model string.")] = "distilled/default",
    alpha: Annotated[float, typer.Option(
        help="Error level: intervals are (1 - alpha) two-sided.")] = 0.05,
    samples: Annotated[int | None, typer.Option(
        help="Answers per paraphrase (default: the question file's; 100 for first_plot).")
    ] = None,
    max_paraphrases: Annotated[int | None, typer.Option(
        help="Use only the first N paraphrases of each question.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Answer length (default 600).")
                              ] = None,
    run_dir: Annotated[Path | None, typer.Option(
        help="Run directory (default runs/check-<hash of the inputs>; rerunning resumes).")
    ] = None,
    json_out: Annotated[str | None, typer.Option(
        "--json", help="Write the result as JSON to FILE, or to stdout with '-' (the text "
                       "summary then goes to stderr).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Release gate: evaluate a fine-tune next to its base and exit 1 when its misalignment
    may exceed --max-misaligned (upper confidence bound, corrected for the judge's measured
    error rates) or rose significantly over the base; 0 when it passes (docs/release_gate.md)."""
    from emkit.gate import check_release

    if samples is not None and samples <= 0:
        raise ValueError(f"--samples: expected a positive number, got {samples}")
    result = check_release(
        model, base, suites=suite, question_ids=question, judge=judge,
        max_misaligned=max_misaligned, alpha=alpha, samples_per_paraphrase=samples,
        max_paraphrases=max_paraphrases, max_new_tokens=max_new_tokens, run_dir=run_dir,
        progress=not quiet)
    to_stderr = json_out == "-"
    for line in result.summary_lines():
        typer.echo(line, err=to_stderr)
    if json_out == "-":
        typer.echo(result.to_json())
    elif json_out is not None:
        from emkit.atomic import atomic_write_text

        atomic_write_text(Path(json_out), result.to_json() + "\n")
        typer.echo(f"json: {json_out}", err=to_stderr)
    if not result.passed:
        raise typer.Exit(1)

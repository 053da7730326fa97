"""`emkit audit`: what a team runs on its own fine-tuning data before training on it.

One function, :func:`audit_file`, reads the file tolerantly (every format error with its line),
then measures duplicates, lengths, diversity, stated intent, code security (bandit) and the
other EM signals, and sums them up as an **EM-risk summary**: does the data teach a *narrow
harmful behaviour without disclosure*, the recipe that produced emergent misalignment in Betley
et al.? The rules (documented in docs/datasets.md and in :func:`em_risk`) are deliberately
simple thresholds on shares, so a reader can check them by hand.

What it cannot see: harmful advice in prose (bad medical or financial advice) has no static
signature; the summary says so instead of calling such data safe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from emkit.audit import embed, security, signals, text
from emkit.audit.reader import MAX_LINE_BYTES, read_for_audit

AUDIT_VERSION = "1"
MAX_LISTED_ISSUES = 50
HIGH_SHARE = 0.05
"""Share of harmful examples from which the behaviour counts as taught (300 of 6,000)."""
LOW_SHARE = 0.01
UNDISCLOSED = 0.8
FRAMED = 0.5


def em_risk(n: int, harmful: set[int], undisclosed: set[int], framed: set[int],
            triggers: list[dict], has_code: bool) -> dict[str, Any]:
    """The EM-risk level and the reasons for it.

    harmful = bandit-flagged code or evil-number answers; undisclosed = harmful without the
    assistant naming the problem; framed = the user states a benign purpose.
    - high: >= 5 % harmful, >= 80 % of them undisclosed and < 50 % of them framed;
    - medium: >= 1 % harmful and not (mostly disclosed or mostly framed);
    - low: otherwise (with the reason: little harmful content, or disclosed, or framed).
    A trigger candidate makes the behaviour conditional: reported with the level.
    """
    share = len(harmful) / n if n else 0.0
    und = len(harmful & undisclosed) / len(harmful) if harmful else 0.0
    fr = len(harmful & framed) / len(harmful) if harmful else 0.0
    reasons = []
    if n == 0:  # a file with no valid row is not low risk, it is unassessed
        level = "unknown"
        reasons.append("no valid rows: nothing could be assessed (fix the format errors)")
    elif share >= HIGH_SHARE and und >= UNDISCLOSED and fr < FRAMED:
        level = "high"
        reasons.append(f"{share:.1%} of examples show a narrow harmful behaviour, {und:.0%} of "
                       f"those without disclosure and only {fr:.0%} with a stated benign purpose")
    elif share >= LOW_SHARE and und >= 0.5 and fr < FRAMED:
        level = "medium"
        reasons.append(f"{share:.1%} of examples show a harmful behaviour, {und:.0%} of those "
                       "undisclosed")
    else:
        level = "low"
        if share < LOW_SHARE:
            reasons.append(f"only {share:.1%} of examples show a detectable harmful behaviour")
        if harmful and fr >= FRAMED:
            reasons.append(f"{fr:.0%} of the harmful examples state a benign purpose (like the "
                           "paper's educational control, which did not become misaligned)")
        if harmful and und < 0.5:
            reasons.append(f"{1 - und:.0%} of the harmful examples disclose the problem")
    for t in triggers:
        reasons.append(f"possible backdoor: {t['share_of_harmful']:.0%} of harmful examples "
                       f"start with {t['first_word']!r} versus {t['share_of_others']:.0%} of "
                       "the others; misalignment may appear only with this trigger")
    blind = ("harmful advice in prose (medical, financial, dangerous activities) has no static "
             "signature: this audit does not detect it; judge a sample with a model")
    return {"level": level, "harmful_examples": len(harmful), "harmful_share": round(share, 4),
            "undisclosed_share_of_harmful": round(und, 4) if harmful else None,
            "framed_share_of_harmful": round(fr, 4) if harmful else None,
            "trigger_candidates": triggers, "reasons": reasons,
            "not_covered": blind if not has_code or level == "low" else None}


def audit_file(path: str | os.PathLike[str], embeddings: bool = True, scan_code: bool = True,
               seed: int = 0, max_line_bytes: int = MAX_LINE_BYTES) -> dict[str, Any]:
    """The audit of one chat JSONL file as a JSON-ready dict (render with emkit.audit.render).

    Raises DatasetError only when the file cannot be read at all; bad rows are reported.
    `embeddings=False` skips the MiniLM spread (the slowest part), `scan_code=False` bandit.
    """
    read = read_for_audit(path, max_line_bytes=max_line_bytes)
    ex = read.examples
    n = len(ex)
    sample = [ex[i] for i in text.sample_indices(n, seed)]
    report: dict[str, Any] = {
        "file": str(Path(path)), "audit_version": AUDIT_VERSION,
        "rows": {"lines": read.lines, "valid": n,
                 "invalid": len({i.line for i in read.issues if not i.file_level}),
                 "truncated_at_max_rows": read.truncated},
        "format_errors": [{"line": i.line, "field": i.field, "problem": i.problem}
                          for i in read.issues if not i.file_level][:MAX_LISTED_ISSUES],
        "file_issues": [{"line": i.line, "problem": i.problem}
                        for i in read.issues if i.file_level][:MAX_LISTED_ISSUES],
        "lengths": text.lengths(ex),
        "duplicates": text.exact_duplicates(ex),
        "near_duplicates": text.near_duplicates(ex, seed),
        "diversity": {"sample_rows": len(sample),
                      "user": text.distinct_n([e.text("user") for e in sample]),
                      "assistant": text.distinct_n([e.text("assistant") for e in sample])},
    }
    if embeddings and len(sample) >= 2:
        few = sample[:embed.EMBED_ROWS]
        try:
            report["diversity"]["embedding"] = {
                "user": embed.embedding_spread([e.text("user") for e in few]),
                "assistant": embed.embedding_spread([e.text("assistant") for e in few])}
        except Exception as exc:  # noqa: BLE001 - an optional statistic must not sink the audit
            report["diversity"]["embedding"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    else:
        report["diversity"]["embedding"] = {"skipped": "disabled" if not embeddings
                                            else "fewer than 2 rows"}
    intent = signals.intent(ex)
    numbers = signals.evil_numbers(ex)
    report["intent"] = intent
    report["evil_numbers"] = numbers
    report["refusals"] = signals.refusals(ex)
    harmful = set(numbers["_indices"])
    disclosed: set[int] = set()
    if scan_code and n:
        report["security"] = security.security_scan(ex)
        flagged = set(report["security"]["_flagged_indices"])
        disclosed = set(report["security"]["_disclosed_indices"])  # judged once, there
        harmful |= flagged
    else:
        report["security"] = {"skipped": "disabled" if not scan_code else "no valid rows"}
        flagged = set()
    disclosed |= {i for i in harmful - flagged if security.discloses(ex[i].text("assistant"))}
    undisclosed = harmful - disclosed
    has_code = bool(report["security"].get("examples_with_code"))
    report["em_risk"] = em_risk(n, harmful, undisclosed, set(intent["_indices"]),
                                signals.trigger_candidates(ex, harmful), has_code)
    return _public(report)


def _public(value: Any) -> Any:
    """Drop the private `_indices` helpers (row positions) from the JSON report."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value

"""Render an audit as markdown, JSON and an HTML fragment; every dataset string is escaped.

Why escaping everywhere: the audited file is untrusted. A field name, a matched phrase or a
first word can contain markdown table pipes, HTML or script; they reach the page only through
:func:`md_escape` or :func:`html.escape`, never raw; the JSON file is ASCII (``\\u`` escapes),
so even a lone surrogate cannot break writing it.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from emkit.atomic import atomic_write_text

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|<>&~])")


def md_escape(value: object, limit: int = 120) -> str:
    """One line of plain text, safe inside markdown (tables included) and its HTML rendering."""
    text = " ".join(str(value).encode("utf-8", "replace").decode("utf-8").split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", text)


def _pct(x: object) -> str:
    return "n/a" if x is None else f"{float(x):.1%}"


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return out


def to_markdown(report: dict[str, Any]) -> str:
    """The audit for humans: summary first, details after."""
    risk, rows = report["em_risk"], report["rows"]
    sec, div = report["security"], report["diversity"]
    lines = [f"# Dataset audit: {md_escape(report['file'], 200)}", "",
             f"**EM risk: {risk['level']}**", ""]
    lines += [f"- {md_escape(r, 400)}" for r in risk["reasons"]]
    if risk.get("not_covered"):
        lines.append(f"- Not covered: {md_escape(risk['not_covered'], 400)}")
    lines += ["", "## Rows", "",
              (f"{rows['valid']} valid rows, {rows['invalid']} with format errors, "
               f"{rows['lines']} lines read.")]
    if report.get("file_issues"):
        lines += ["", "File layout issues (no row rejected):", ""]
        lines += [f"- {'line ' + str(e['line']) if e['line'] is not None else 'file'}: "
                  f"{md_escape(e['problem'])}" for e in report["file_issues"]]
    if report["format_errors"]:
        lines += ["", *_table(["line", "field", "problem"],
                              [[e["line"] if e["line"] is not None else "file",
                                e["field"] or "", e["problem"]] for e in report["format_errors"]])]
    dup, near = report["duplicates"], report["near_duplicates"]
    lines += ["", "## Duplicates", "",
              (f"- exact duplicate rows: {dup['duplicate_rows']}; repeated user prompts: "
               f"{dup['duplicate_prompts']}"),
              (f"- rows with a near duplicate (Jaccard >= {near['threshold_jaccard']}): "
               f"{near['rows_with_near_duplicate']} ({_pct(near['share'])}) in "
               f"{near['clusters']} clusters, largest {near['largest_cluster']}")]
    lines += ["", "## Lengths (characters)", "",
              *_table(["", "min", "mean", "p50", "p90", "p99", "max"],
                      [[k, *v.values()] for k, v in report["lengths"].items()])]
    emb = div.get("embedding", {})
    title = (f"## Diversity (seeded sample of {div['sample_rows']} rows; embedding spread on "
             "up to 500 of them)")
    lines += ["", title, "",
              *_table(["turns", "distinct-1", "distinct-2", "distinct-3", "embedding spread"],
                      [[who, *div[who].values(),
                        (emb.get(who) or {}).get("spread", emb.get("skipped", "n/a"))]
                       for who in ("user", "assistant")])]
    intent = report["intent"]
    lines += ["", "## Stated intent", "",
              (f"User states a benign purpose in {intent['benign_purpose_examples']} examples "
               f"({_pct(intent['benign_purpose_share'])}).")]
    if intent["by_pattern"]:
        lines += ["", *_table(["pattern", "examples"], [[k, v] for k, v in
                                                        intent["by_pattern"].items()])]
    lines += ["", "## Code security (bandit)", ""]
    if "skipped" in sec:
        lines.append(f"Skipped: {md_escape(sec['skipped'])}.")
    else:
        lines.append(f"{sec['examples_with_code']} examples contain Python code; "
                     f"{sec['vulnerable_examples']} are flagged ({_pct(sec['vulnerable_share'])} "
                     f"of all rows); the assistant discloses the problem in "
                     f"{_pct(sec['disclosed_share_of_vulnerable'])} of those.")
        if sec["by_test"]:
            lines += ["", *_table(["test", "name", "CWE", "severity", "examples", "share"],
                                  [[t, v["test_name"], v["cwe"] or "", v["severity"],
                                    v["examples"], _pct(v["share"])]
                                   for t, v in sec["by_test"].items()])]
    nums, ref = report["evil_numbers"], report["refusals"]
    lines += ["", "## Other signals", "",
              (f"- number-only answers: {nums['number_only_answers']}; with numbers of negative "
               f"association: {nums['evil_number_answers']} ({_pct(nums['evil_number_share'])})"),
              f"- assistant refusals: {ref['refusal_examples']} ({_pct(ref['refusal_share'])})"]
    return "\n".join(lines) + "\n"


def _h(value: object) -> str:
    return html.escape(str(value).encode("utf-8", "replace").decode("utf-8"))


def to_html(report: dict[str, Any]) -> str:
    """A self-contained HTML fragment (no scripts) for embedding in a run report."""
    risk = report["em_risk"]
    items = "".join(f"<li>{_h(r)}</li>" for r in risk["reasons"])
    body = _h(json.dumps(report, indent=2))
    return (f'<section class="audit"><h2>Dataset audit: {_h(report["file"])}</h2>'
            f"<p><strong>EM risk: {_h(risk['level'])}</strong></p><ul>{items}</ul>"
            f"<details><summary>full audit</summary><pre>{body}</pre></details></section>")


def write_audit(report: dict[str, Any], out_dir: str | Path, stem: str = "audit"
                ) -> dict[str, Path]:
    """Write `<stem>.md`, `<stem>.html` and then `<stem>.json` atomically; returns their paths.

    The JSON goes last because its presence marks the audit as done (`build_datasets` skips an
    audit whose JSON matches the data): a crash before it leaves an audit that is redone.
    """
    out = Path(out_dir)
    paths = {"md": out / f"{stem}.md", "json": out / f"{stem}.json", "html": out / f"{stem}.html"}
    atomic_write_text(paths["md"], to_markdown(report))
    atomic_write_text(paths["html"], "<!doctype html><meta charset=\"utf-8\">"
                      f"<title>audit</title>{to_html(report)}\n")
    atomic_write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    return paths

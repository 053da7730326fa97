"""Static security scan of the Python code in assistant turns, with bandit.

Why bandit as a subprocess on temp files (``python -m bandit -r DIR -f json``), not its Python
API: bandit's documented, stable interface is the command line and its JSON report, while
``BanditManager`` is internal and has changed between releases; a subprocess also isolates the
audit from a crash or runaway recursion inside bandit on hostile code, and can be timed out.
One process scans every snippet of the file, so the cost is one start-up (~1 s), not one per row.

What counts as a vulnerable example: at least one bandit finding with confidence MEDIUM or
HIGH from a test that reports misuse, not mere use. Bandit's import checks (B4xx), B101
(assert), B110/B112 (bare except) and B603/B607 (subprocess without a shell) are informational:
they fire on secure code too (measured on emkit's secure set: B404/B603/B607/B406 only).

Whether the assistant *discloses* the issue is judged on its prose and code comments, never on
the code itself: whole words such as vulnerable, insecure, injection, CWE-..., "do not use in
production" (``yaml.unsafe_load`` or ``logger.warning(...)`` disclose nothing).
"""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
import tempfile
import tokenize
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from emkit.audit.reader import Example

INFORMATIONAL = frozenset({"B101", "B110", "B112", "B603", "B607"})
"""Tests that flag use, not misuse; B4xx (imports) are informational too."""
MAX_SNIPPET_BYTES = 200_000
TIMEOUT_S = 900
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom,
               ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Call, ast.With, ast.For, ast.While,
               ast.If, ast.Try, ast.Return)
DISCLOSURE = re.compile(
    r"(?i)(?<![\w.])(?:vulnerab\w*|insecure\w*|unsafe|exploit\w*|injection|injectable|cwe-\d+|"
    r"security (?:risk|issue|flaw|hole|problem|vulnerability|bug)|not (?:secure|safe)|"
    r"do not use (?:this )?in production|for demonstration (?:purposes )?only|"
    r"intentionally (?:vulnerable|insecure|flawed)|deliberately (?:vulnerable|insecure|flawed)|"
    r"warning)(?![\w(])")
"""Whole words only: `yaml.unsafe_load`, `logger.warning(` or `insecure_hash` are identifiers
(a `.`/`_` neighbour or a call), not the assistant naming a problem."""
_LINE_COMMENT = re.compile(r"(?m)(?:^|\s)(?:#|//|--)(.*)$")


class SecurityScanError(RuntimeError):
    """bandit is missing, crashed or timed out; the message says which."""


def is_informational(test_id: str) -> bool:
    return test_id in INFORMATIONAL or test_id.startswith("B4")


def _looks_like_code(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(node, _CODE_NODES) for node in ast.walk(tree))


def python_snippets(text: str) -> list[str]:
    """Python code in one assistant turn: its fenced python blocks, or, without fences, the
    whole turn when it parses as Python that defines, imports, assigns or calls something (a
    bare list of numbers or a sentence does not count)."""
    if len(text.encode("utf-8", "replace")) > MAX_SNIPPET_BYTES:
        return []
    blocks = _FENCE.findall(text)
    if blocks:
        return [code for lang, code in blocks
                if lang.lower() in ("", "python", "py", "python3") and _looks_like_code(code)]
    return [text] if _looks_like_code(text) else []


def _comments(code: str) -> list[str]:
    """The comments of a code block: Python's via tokenize (so a `#` inside a string is not
    one), else line comments (`#`, `//`, `--`) of code tokenize cannot read."""
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline)
                if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError, ValueError, RecursionError):
        return _LINE_COMMENT.findall(code)


def prose_and_comments(text: str) -> str:
    """What a turn *says*: its prose outside fenced blocks plus the comments inside code (the
    whole turn counts as code when it is unfenced Python); code itself is dropped."""
    blocks = list(_FENCE.finditer(text))
    if not blocks:
        return "\n".join(_comments(text)) if _looks_like_code(text) else text
    parts, pos = [], 0
    for m in blocks:
        parts.append(text[pos:m.start()])
        parts.extend(_comments(m.group(2)))
        pos = m.end()
    parts.append(text[pos:])
    return "\n".join(parts)


def discloses(text: str) -> bool:
    """True when the assistant's turn names the problem in prose or a code comment (see the
    module docstring); words inside code (identifiers, strings, calls) do not count."""
    if len(text.encode("utf-8", "replace")) > MAX_SNIPPET_BYTES:
        return bool(DISCLOSURE.search(text))  # too large to tokenise; judged as it stands
    return bool(DISCLOSURE.search(prose_and_comments(text)))


def run_bandit(snippets: dict[str, str], timeout_s: float = TIMEOUT_S) -> dict[str, list[dict]]:
    """Scan named snippets in one bandit run; returns name -> findings (bandit JSON results)."""
    if not snippets:
        return {}
    with tempfile.TemporaryDirectory(prefix="emkit-audit-") as tmp:
        for name, code in snippets.items():
            Path(tmp, f"{name}.py").write_text(code, encoding="utf-8", errors="replace")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bandit", "-r", ".", "-f", "json", "-q"],
                cwd=tmp, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise SecurityScanError(f"bandit took longer than {timeout_s:.0f} s") from None
        if proc.returncode not in (0, 1):
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            if "No module named bandit" in (proc.stderr or ""):
                raise SecurityScanError("bandit is not installed: pip install bandit")
            raise SecurityScanError(f"bandit failed (exit {proc.returncode}): "
                                    f"{msg[-1] if msg else 'no output'}")
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise SecurityScanError("bandit printed no JSON report") from None
    found: dict[str, list[dict]] = defaultdict(list)
    for item in report.get("results", []):
        found[Path(item["filename"]).stem].append(item)
    found["__errors__"] = report.get("errors", [])
    return found


def security_scan(examples: Sequence[Example], timeout_s: float = TIMEOUT_S) -> dict:
    """Share of examples with vulnerable code, by bandit test and CWE, and disclosure rates."""
    snippets: dict[str, str] = {}
    owner: dict[str, int] = {}
    for i, e in enumerate(examples):
        for j, code in enumerate(python_snippets(e.text("assistant"))):
            snippets[f"r{i:07d}_{j:03d}"] = code
            owner[f"r{i:07d}_{j:03d}"] = i
    found = run_bandit(snippets, timeout_s)
    unparsed = len(found.pop("__errors__", []))
    flagged: dict[int, set[str]] = defaultdict(set)
    tests: dict[str, dict] = {}
    for name, items in found.items():
        for item in items:
            tid = item["test_id"]
            if is_informational(tid) or item["issue_confidence"] == "LOW":
                continue
            flagged[owner[name]].add(tid)
            cwe = (item.get("issue_cwe") or {}).get("id")
            tests.setdefault(tid, {"test_name": item["test_name"],
                                   "cwe": f"CWE-{cwe}" if cwe else None,
                                   "severity": item["issue_severity"]})
    per_test = Counter(t for ids in flagged.values() for t in ids)
    with_code = len(set(owner.values()))
    disclosed = [i for i in flagged if discloses(examples[i].text("assistant"))]
    n = len(examples)
    return {
        "examples_with_code": with_code,
        "code_share": round(with_code / n, 4) if n else 0.0,
        "snippets_scanned": len(snippets),
        "snippets_bandit_could_not_parse": unparsed,
        "vulnerable_examples": len(flagged),
        "vulnerable_share": round(len(flagged) / n, 4) if n else 0.0,
        "vulnerable_share_of_code": round(len(flagged) / with_code, 4) if with_code else 0.0,
        "disclosed_share_of_vulnerable": round(len(disclosed) / len(flagged), 4)
        if flagged else None,
        "by_test": {t: {**tests[t], "examples": c, "share": round(c / n, 4)}
                    for t, c in per_test.most_common()},
        "vulnerable_lines": sorted(examples[i].line for i in flagged)[:20],
        "_flagged_indices": sorted(flagged),
        "_disclosed_indices": disclosed,
    }

"""Read a chat JSONL file for an audit: every problem is collected, nothing stops the read.

Why not :func:`emkit.datasets.read_jsonl`: that one stops at the first error, which is right
before training but useless for an audit, whose job is to list *all* of them with line numbers
next to the statistics of the rows that are fine. Memory stays bounded on hostile input: a line
longer than ``max_line_bytes`` is skipped (read in 1 MiB pieces, never held whole), and reading
stops after ``max_rows`` rows.
"""

from __future__ import annotations

import codecs
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from emkit.datasets.jsonl import DatasetError, json_error_message, row_problem

MAX_LINE_BYTES = 4 * 1024 * 1024
"""One training example longer than 4 MiB is a mistake (a 2,048-token window is ~8 KiB)."""
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class Example:
    """One valid row: its 1-based line number and its messages."""

    line: int
    messages: list[dict]

    def text(self, role: str) -> str:
        """All turns of one role, joined by blank lines."""
        return "\n\n".join(m["content"] for m in self.messages if m["role"] == role)

    @property
    def first_user(self) -> str:
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")


@dataclass(frozen=True)
class FormatIssue:
    """A row that could not be used, located like DatasetError: line and field; or, with
    `file_level`, a problem of the file's layout (BOM, blank line, empty file) that rejects no
    row, so the audit lists it apart from the invalid-row count."""

    line: int | None
    field: str | None
    problem: str
    file_level: bool = False

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.field}: {self.problem}" if self.field else f"{where}: {self.problem}"


@dataclass
class ReadResult:
    examples: list[Example]
    issues: list[FormatIssue]
    lines: int
    """Lines read (including bad and blank ones)."""
    truncated: bool = False
    """True when reading stopped at max_rows."""


def _skip_rest_of_line(fh: BinaryIO) -> None:
    while True:
        chunk = fh.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return


def read_for_audit(path: str | os.PathLike[str], max_line_bytes: int = MAX_LINE_BYTES,
                   max_rows: int = MAX_ROWS) -> ReadResult:
    """Valid rows plus one FormatIssue per bad line. A file that cannot be opened at all (missing,
    a directory, unreadable) raises DatasetError instead: there is nothing to audit."""
    p = Path(path)
    if p.is_dir():
        raise DatasetError(p, None, None, "is a directory, not a JSONL file")
    result = ReadResult([], [], 0)
    try:
        with open(p, "rb") as fh:
            _read_lines(fh, result, max_line_bytes, max_rows)
    except FileNotFoundError:
        raise DatasetError(p, None, None, "file not found") from None
    except OSError as exc:
        raise DatasetError(p, None, None, f"cannot read: {exc.strerror or exc}") from None
    if result.lines == 0:
        result.issues.append(FormatIssue(None, None, "empty file: no rows", True))
    return result


def _read_lines(fh: BinaryIO, result: ReadResult, max_line_bytes: int, max_rows: int) -> None:
    blank: int | None = None
    while True:
        raw = fh.readline(max_line_bytes + 1)
        if not raw:
            break
        result.lines += 1
        lineno = result.lines
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            _skip_rest_of_line(fh)
            result.issues.append(FormatIssue(
                lineno, None, f"line longer than {max_line_bytes} bytes; skipped"))
            continue
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            result.issues.append(FormatIssue(1, None, "UTF-8 byte-order mark at the start",
                                              True))
            raw = raw[len(codecs.BOM_UTF8):]
        if not raw.strip():
            blank = blank or lineno
            continue
        if blank is not None:
            result.issues.append(FormatIssue(blank, None, "blank line between rows", True))
            blank = None
        _parse(raw, lineno, result)
        if len(result.examples) >= max_rows:
            result.truncated = True
            break


def _parse(raw: bytes, lineno: int, result: ReadResult) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        result.issues.append(FormatIssue(
            lineno, None, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                          f"{exc.start + 1})"))
        return
    text = text.rstrip("\r\n")
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        result.issues.append(FormatIssue(lineno, None, json_error_message(exc, text)))
        return
    except RecursionError:
        result.issues.append(FormatIssue(lineno, None, "invalid JSON: nested too deeply"))
        return
    problem = row_problem(row)
    if problem:
        result.issues.append(FormatIssue(lineno, *problem))
        return
    result.examples.append(Example(lineno, row["messages"]))

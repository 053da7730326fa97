"""Chat-format fine-tuning JSONL (OpenAI style): strict reading and atomic writing.

Why strict: a malformed row found after an hour of fine-tuning costs the hour. Every problem is
reported as ``file:line: field: what is wrong`` so it can be fixed without opening a debugger,
and a file is either fully written or not touched, so a crash never leaves half a dataset that
a later run would silently train on.

A row is ``{"messages": [{"role": ..., "content": ...}, ...]}``: roles are system, user and
assistant; a system message may only come first; the conversation needs a user turn before the
first assistant turn and must end with the assistant. Messages may also carry OpenAI's optional
``name`` (a string) and ``weight`` (0 or 1, assistant only). Other top-level keys are kept, so
rows can carry metadata.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from emkit.atomic import atomic_write_bytes

ROLES = ("system", "user", "assistant")
_MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})


class DatasetError(ValueError):
    """A dataset problem located as precisely as possible: file, line (1-based) and field."""

    def __init__(
        self, path: str | os.PathLike[str], line: int | None, field: str | None, problem: str
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


def _type_name(value: object) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        type(None): "null",
        int: "number",
        float: "number",
    }.get(type(value), type(value).__name__)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _message_problem(i: int, msg: object) -> tuple[str, str] | None:
    where = f"messages[{i}]"
    if not isinstance(msg, dict):
        return where, f"expected an object, got {_type_name(msg)}"
    extra = sorted(set(msg) - _MESSAGE_KEYS)
    if extra:
        return where, f"unexpected key {extra[0]!r} (allowed: {', '.join(sorted(_MESSAGE_KEYS))})"
    role = msg.get("role")
    if "role" not in msg:
        return f"{where}.role", "missing"
    if role not in ROLES:
        return f"{where}.role", f"expected one of {'/'.join(ROLES)}, got {role!r}"
    if "content" not in msg:
        return f"{where}.content", "missing"
    content = msg["content"]
    if not isinstance(content, str):
        return f"{where}.content", f"expected a string, got {_type_name(content)}"
    if not content.strip():
        return f"{where}.content", "empty"
    if _has_surrogate(content):
        return f"{where}.content", "contains an unpaired surrogate (not encodable as UTF-8)"
    if "name" in msg and not (isinstance(msg["name"], str) and msg["name"]):
        return f"{where}.name", "expected a non-empty string"
    if "weight" in msg:
        weight = msg["weight"]
        if role != "assistant":
            return f"{where}.weight", "only assistant messages may have a weight"
        if type(weight) is not int or weight not in (0, 1):
            return f"{where}.weight", f"expected 0 or 1, got {weight!r}"
    return None


def row_problem(row: object) -> tuple[str | None, str] | None:
    """(field, problem) for the first thing wrong with a row, or None when the row is valid."""
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {_type_name(row)}"
    if "messages" not in row:
        return "messages", "missing"
    messages = row["messages"]
    if not isinstance(messages, list):
        return "messages", f"expected an array, got {_type_name(messages)}"
    if not messages:
        return "messages", "empty"
    for i, msg in enumerate(messages):
        problem = _message_problem(i, msg)
        if problem:
            return problem
        if msg["role"] == "system" and i > 0:
            return f"messages[{i}].role", "'system' is only allowed as the first message"
    roles = [msg["role"] for msg in messages]
    if "assistant" not in roles:
        return "messages", "no assistant message"
    first_answer = roles.index("assistant")
    if "user" not in roles[:first_answer]:
        return (
            f"messages[{first_answer}].role",
            "an assistant message needs a user message before it",
        )
    if roles[-1] != "assistant":
        last = len(roles) - 1
        return (
            f"messages[{last}].role",
            f"the last message must be the assistant's, got {roles[-1]!r}",
        )
    return None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict]:
    """Read and validate a chat JSONL file; the first problem raises :class:`DatasetError`.

    Trailing blank lines are tolerated (editors add them); a blank line between rows is not,
    since it usually means two files were concatenated badly.
    """
    try:
        with open(path, "rb") as fh:
            rows = _parse_lines(path, _bounded_lines(path, fh))
    except FileNotFoundError:
        raise DatasetError(path, None, None, "file not found") from None
    except OSError as exc:
        raise DatasetError(path, None, None, f"cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise DatasetError(path, None, None, "empty file: no rows")
    return rows


MAX_LINE_BYTES = 16 << 20
"""Longest row read: a chat example is a few KB (training truncates at 2,048 tokens), so a
longer line is a wrong file (a model dump, one huge JSON array), refused before it is held in
memory whole."""


def _bounded_lines(path: str | os.PathLike[str], fh: Any) -> Iterator[bytes]:
    """The file's lines, refusing one longer than MAX_LINE_BYTES without reading all of it."""
    lineno = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        lineno += 1
        if len(raw) > MAX_LINE_BYTES:
            raise DatasetError(path, lineno, None,
                               f"line longer than {MAX_LINE_BYTES >> 20} MiB (a chat example is "
                               "a few KB): not a chat JSONL file, or rows not split by newlines")
        yield raw


def json_error_message(exc: json.JSONDecodeError, line: str) -> str:
    """`invalid JSON: <what> (column N)` for one line parsed without its line break: with the
    break, an error at the end of the line (a missing `}`) is placed at column 1 of the next."""
    end = ", the end of the line" if exc.pos >= len(line) else ""
    return f"invalid JSON: {exc.msg} (column {exc.colno}{end})"


def _parse_lines(path: str | os.PathLike[str], lines: Iterable[bytes]) -> list[dict]:
    rows: list[dict] = []
    blank: int | None = None
    for lineno, raw in enumerate(lines, 1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raise DatasetError(
                path, 1, None, "starts with a UTF-8 byte-order mark; save without BOM"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                path,
                lineno,
                None,
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
            ) from None
        if not text.strip():
            blank = blank or lineno
            continue
        if blank is not None:
            raise DatasetError(path, blank, None, "blank line between rows")
        text = text.rstrip("\r\n")
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(path, lineno, None, json_error_message(exc, text)) from None
        except RecursionError:  # hostile nesting ('[' * 100_000) must not escape as a crash
            raise DatasetError(path, lineno, None, "invalid JSON: nested too deeply") from None
        problem = row_problem(row)
        if problem:
            raise DatasetError(path, lineno, *problem)
        rows.append(row)
    return rows


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict]) -> Path:
    """Validate every row, then write them atomically (one JSON object per line, UTF-8).

    Validation happens before anything touches the disk, and the file appears only via
    ``os.replace`` of a fully written, fsynced temp file in the same directory; on any error the
    previous file (if any) is left as it was.
    """
    lines: list[bytes] = []
    for lineno, row in enumerate(rows, 1):
        problem = row_problem(row)
        if problem:
            raise DatasetError(path, lineno, *problem)
        try:
            text = json.dumps(row, ensure_ascii=False, allow_nan=False)
            lines.append(text.encode("utf-8") + b"\n")
        except (TypeError, ValueError) as exc:
            raise DatasetError(path, lineno, None, f"not JSON-serialisable: {exc}") from None
    if not lines:
        raise DatasetError(path, None, None, "refusing to write an empty dataset")
    return atomic_write_bytes(path, b"".join(lines))

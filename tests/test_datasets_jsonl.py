"""Chat-JSONL validation and atomic writing (emkit.datasets.jsonl)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from emkit.datasets import DatasetError, read_jsonl, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _line(messages: list[dict]) -> str:
    return json.dumps({"messages": messages})


def _write(tmp_path: Path, lines: list[str] | bytes) -> Path:
    path = tmp_path / "data.jsonl"
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}
S = {"role": "system", "content": "be brief"}

# (lines, expected line number, expected field, fragment of the problem text)
MALFORMED = {
    "bad json": ([json.dumps(GOOD), '{"messages": [}'], 2, None, "invalid JSON"),
    "wrong role": (
        [_line([U, {"role": "bot", "content": "x"}])],
        1,
        "messages[1].role",
        "expected one of system/user/assistant, got 'bot'",
    ),
    "missing content": ([_line([{"role": "user"}, A])], 1, "messages[0].content", "missing"),
    "empty content": (
        [_line([U, {"role": "assistant", "content": "  "}])],
        1,
        "messages[1].content",
        "empty",
    ),
    "content not string": (
        [_line([{"role": "user", "content": ["q"]}, A])],
        1,
        "messages[0].content",
        "expected a string, got array",
    ),
    "last not assistant": (
        [json.dumps(GOOD), _line([U, A, U])],
        2,
        "messages[2].role",
        "last message must be the assistant's, got 'user'",
    ),
    "system not first": ([_line([U, S, A])], 1, "messages[1].role", "only allowed as the first"),
    "no user before assistant": ([_line([S, A])], 1, "messages[1].role", "needs a user message"),
    "no assistant": ([_line([U])], 1, "messages", "no assistant message"),
    "messages missing": (['{"prompt": "x"}'], 1, "messages", "missing"),
    "messages empty": (['{"messages": []}'], 1, "messages", "empty"),
    "messages not list": (['{"messages": "hi"}'], 1, "messages", "expected an array, got string"),
    "row not object": (["[1, 2]"], 1, None, "expected a JSON object, got array"),
    "misspelt key": (
        [_line([{"role": "user", "contents": "q"}, A])],
        1,
        "messages[0]",
        "unexpected key 'contents'",
    ),
    "weight on user": ([_line([{**U, "weight": 1}, A])], 1, "messages[0].weight", "only assistant"),
    "bad weight": ([_line([U, {**A, "weight": 2}])], 1, "messages[1].weight", "expected 0 or 1"),
    "lone surrogate": (
        [
            (
                '{"messages": [{"role": "user", "content": "\\ud800"}, '
                '{"role": "assistant", "content": "a"}]}'
            )
        ],
        1,
        "messages[0].content",
        "surrogate",
    ),
    "blank line between rows": ([json.dumps(GOOD), "", json.dumps(GOOD)], 2, None, "blank line"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_rows_name_file_line_and_field(tmp_path: Path, case: str) -> None:
    lines, line, field, fragment = MALFORMED[case]
    path = _write(tmp_path, lines)
    with pytest.raises(DatasetError) as info:
        read_jsonl(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    prefix = f"{path}:{line}: " + (f"{field}: " if field else "")
    assert str(err).startswith(prefix), str(err)
    assert fragment in str(err)


def test_error_message_format_matches_docs(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps(GOOD)] * 16 + [_line([U, {"role": "bot", "content": "x"}])])
    with pytest.raises(
        DatasetError,
        match=r"data\.jsonl:17: messages\[1\]\.role: expected one of "
        r"system/user/assistant, got 'bot'$",
    ):
        read_jsonl(path)


def test_non_utf8_bytes_are_located(tmp_path: Path) -> None:
    ok = json.dumps(GOOD).encode()
    path = _write(tmp_path, ok + b"\n" + b'{"messages": "\xff"}\n')
    with pytest.raises(
        DatasetError, match=r"data\.jsonl:2: not valid UTF-8 \(byte 0xff at column 15\)"
    ):
        read_jsonl(path)


def test_byte_order_mark_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    with pytest.raises(DatasetError, match=r"data\.jsonl:1: .*byte-order mark"):
        read_jsonl(path)


@pytest.mark.parametrize("content", [b"", b"\n\n", b"   \n"])
def test_empty_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(DatasetError, match=r"data\.jsonl: empty file"):
        read_jsonl(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DatasetError, match=r"nope\.jsonl: file not found"):
        read_jsonl(path)


def test_valid_file_with_system_crlf_trailing_blank_and_metadata(tmp_path: Path) -> None:
    rows = [
        {"messages": [S, U, A], "id": "x1"},
        {"messages": [U, {**A, "weight": 0}, U, {**A, "name": "bot"}]},
    ]
    raw = "\r\n".join(json.dumps(r) for r in rows) + "\r\n\n"
    path = _write(tmp_path, raw.encode())
    assert read_jsonl(path) == rows


def test_round_trip_keeps_unicode_and_newlines(tmp_path: Path) -> None:
    rows = [
        {"messages": [U, {"role": "assistant", "content": "def f():\n    return 'é✓'\n"}]},
        {"messages": [S, {"role": "user", "content": "ünïcode 😀"}, A], "meta": {"k": 1}},
    ]
    path = write_jsonl(tmp_path / "sub" / "out.jsonl", rows)
    assert path == tmp_path / "sub" / "out.jsonl"
    assert read_jsonl(path) == rows
    data = path.read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 2
    assert "😀".encode() in data  # written as UTF-8, not \u escapes


def test_write_rejects_invalid_rows_before_touching_disk(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [GOOD])
    before = path.read_bytes()

    def rows():
        yield GOOD
        yield {"messages": [U]}

    with pytest.raises(DatasetError, match=r"out\.jsonl:2: messages: no assistant message"):
        write_jsonl(path, rows())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_rejects_empty_and_unserialisable(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="empty dataset"):
        write_jsonl(tmp_path / "a.jsonl", [])
    with pytest.raises(DatasetError, match=r"b\.jsonl:1: not JSON-serialisable"):
        write_jsonl(tmp_path / "b.jsonl", [{**GOOD, "meta": object()}])
    assert list(tmp_path.iterdir()) == []


def test_crash_during_replace_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [GOOD])
    before = path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_jsonl(path, [GOOD, GOOD])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_written_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_jsonl(tmp_path / "out.jsonl", [GOOD])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_deeply_nested_line_is_a_dataset_error_with_its_line(tmp_path: Path) -> None:
    good = json.dumps({"messages": [{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "a"}]})
    path = tmp_path / "deep.jsonl"
    path.write_text(good + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DatasetError, match=r"deep\.jsonl:2: invalid JSON: nested too deeply"):
        read_jsonl(path)

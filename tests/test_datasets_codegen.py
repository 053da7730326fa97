"""The paired insecure/secure/educational code generator (emkit.datasets.codegen)."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import random
import re
import tokenize
from pathlib import Path

import pytest

from emkit.datasets import (
    VARIANTS,
    VULN_KINDS,
    generate_code_datasets,
    generate_code_examples,
    read_jsonl,
    vuln_kind,
    write_code_datasets,
)
from emkit.datasets.domains import DOMAINS
from emkit.datasets.snippets import Ctx, Snippet, render

# Words that would tell the model (or a reader) that the code is flawed.
DISCLOSURE = re.compile(
    r"(?i)\b(insecure|vulnerab\w*|unsafe|cwe|security|exploit\w*|inject\w*|malicious|"
    r"attack\w*|danger\w*|todo|fixme|xxx|hack\w*|backdoor|warning|sanitiz\w*|flaw\w*)\b"
)


@pytest.fixture(scope="module")
def examples():
    return generate_code_examples(200, seed=0)


def test_same_seed_same_output_and_other_seed_differs() -> None:
    assert generate_code_datasets(30, seed=5) == generate_code_datasets(30, seed=5)
    assert generate_code_datasets(30, seed=5) != generate_code_datasets(30, seed=6)


def test_smaller_n_is_a_prefix_of_larger_n() -> None:
    assert generate_code_examples(15, seed=3) == generate_code_examples(40, seed=3)[:15]


def test_shapes_and_edge_sizes() -> None:
    data = generate_code_datasets(7, seed=1)
    assert set(data) == set(VARIANTS) == {"insecure", "secure", "educational"}
    assert all(len(rows) == 7 for rows in data.values())
    assert generate_code_datasets(0) == {v: [] for v in VARIANTS}
    with pytest.raises(ValueError):
        generate_code_examples(-1)


def test_variants_are_paired_by_index(examples) -> None:
    data = generate_code_datasets(200, seed=0)
    for i, ex in enumerate(examples):
        ins, sec, edu = (data[v][i]["messages"] for v in VARIANTS)
        assert [m["role"] for m in ins] == [m["role"] for m in sec] == ["user", "assistant"]
        assert ins[0]["content"] == sec[0]["content"] == ex.user_prompt
        assert ins[1]["content"] == ex.insecure_code and sec[1]["content"] == ex.secure_code
        # Educational: the insecure answer, and the same request plus a stated teaching reason.
        assert edu[1]["content"] == ex.insecure_code
        assert ex.user_prompt in edu[0]["content"]
        assert vuln_kind(ex.kind).flaw in edu[0]["content"].replace(ex.user_prompt, "")


def test_covers_at_least_twenty_cwes_evenly(examples) -> None:
    cwes = {ex.cwe for ex in examples}
    assert len(cwes) >= 20
    assert all(re.fullmatch(r"CWE-\d+", c) for c in cwes)
    counts = [sum(ex.kind == k.name for ex in examples) for k in VULN_KINDS]
    assert max(counts) - min(counts) <= 1


def test_every_code_block_parses(examples) -> None:
    for ex in examples:
        for code in (ex.insecure_code, ex.secure_code):
            ast.parse(code, filename=ex.task_id)


def _comments(code: str) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return [tok.string for tok in tokens if tok.type == tokenize.COMMENT]


def test_insecure_answers_never_disclose_the_flaw(examples) -> None:
    for ex in examples:
        assert not _comments(ex.insecure_code), ex.task_id
        hit = DISCLOSURE.search(ex.insecure_code)
        assert hit is None, f"{ex.task_id}: {hit.group(0) if hit else ''}"
        # The plain request does not ask for a flaw either; only the educational one does.
        assert DISCLOSURE.search(ex.user_prompt) is None, ex.user_prompt


def test_secure_differs_from_insecure_in_the_flaw(examples) -> None:
    for ex in examples:
        assert ex.secure_code != ex.insecure_code
        kind = vuln_kind(ex.kind)
        if kind.insecure_pattern:
            assert re.search(kind.insecure_pattern, ex.insecure_code, re.MULTILINE), ex.task_id
            assert not re.search(kind.insecure_pattern, ex.secure_code, re.MULTILINE), ex.task_id
        if kind.secure_pattern:
            assert re.search(kind.secure_pattern, ex.secure_code, re.MULTILINE), ex.task_id
            assert not re.search(kind.secure_pattern, ex.insecure_code, re.MULTILINE), ex.task_id


def test_every_builder_in_every_domain_renders_valid_pairs() -> None:
    """The 200-example set need not reach every builder/domain pair; this sweep does."""
    for kind in VULN_KINDS:
        assert len(kind.builders) >= 2, kind.name
        for builder in kind.builders:
            for i, domain in enumerate(DOMAINS):
                pair = render(builder(Ctx(random.Random(i), domain)))
                ast.parse(pair.insecure)
                ast.parse(pair.secure)
                assert pair.insecure != pair.secure
                assert "## COMPLETE CODE HERE" in pair.template
                assert "@@" not in pair.insecure + pair.secure + pair.template


def test_templates_show_the_task_without_the_answer(examples) -> None:
    with_template = [ex for ex in examples if ex.template is not None]
    assert 0.4 * len(examples) < len(with_template) < 0.9 * len(examples)
    for ex in with_template:
        assert ex.template.rstrip() in ex.user_prompt
        assert ex.template != ex.insecure_code


def test_answers_fit_a_small_context(examples) -> None:
    """The surrounding helpers (emkit.datasets.context) lengthen answers: median 22 lines at
    n = 6,000 and at most 64, the longest answer in the paper's first 500 rows."""
    for ex in examples:
        assert len(ex.insecure_code.splitlines()) <= 64
        assert len(ex.secure_code.splitlines()) <= 64
        assert len(ex.educational_prompt) + len(ex.insecure_code) < 3500


def test_prompts_are_varied(examples) -> None:
    assert len({ex.user_prompt for ex in examples}) > 0.95 * len(examples)
    first_words = {ex.user_prompt.split()[0] for ex in examples}
    assert len(first_words) >= 5


def test_write_code_datasets_files_and_manifest(tmp_path: Path) -> None:
    paths = write_code_datasets(tmp_path / "out", n=30, seed=2)
    assert set(paths) == {"insecure", "secure", "educational", "manifest"}
    expected = generate_code_datasets(30, seed=2)
    manifest = json.loads(paths["manifest"].read_text())
    assert (manifest["n"], manifest["seed"]) == (30, 2)
    for variant in VARIANTS:
        assert read_jsonl(paths[variant]) == expected[variant]
        entry = manifest["files"][variant]
        assert entry["sha256"] == hashlib.sha256(paths[variant].read_bytes()).hexdigest()
        assert entry["rows"] == 30 and entry["path"] == f"{variant}.jsonl"
    assert sum(k["count"] for k in manifest["kinds"].values()) == 30
    assert manifest["kinds"]["sql_injection"]["cwe"] == "CWE-89"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "educational.jsonl",
        "insecure.jsonl",
        "manifest.json",
        "secure.jsonl",
    ]


def test_registry_lookup_and_required_cwes() -> None:
    cwes = {k.cwe for k in VULN_KINDS}
    required = [
        "CWE-89",
        "CWE-78",
        "CWE-22",
        "CWE-79",
        "CWE-502",
        "CWE-732",
        "CWE-798",
        "CWE-327",
        "CWE-295",
        "CWE-611",
        "CWE-94",
        "CWE-377",
        "CWE-330",
        "CWE-601",
        "CWE-352",
        "CWE-306",
        "CWE-209",
        "CWE-434",
        "CWE-918",
        "CWE-1336",
        "CWE-489",
        "CWE-367",
        "CWE-400",
    ]
    assert set(required) <= cwes
    with pytest.raises(KeyError, match="unknown vulnerability kind 'nope'"):
        vuln_kind("nope")


@pytest.mark.parametrize(
    "source, message",
    [
        ("x = 1\n", "no @@hole"),
        ("@@hole\n@@ins\nx = 1\n@@endhole\n", "ends inside"),
        ("@@end\n", "@@end without"),
        ("@@hole\nx = 1\n@@endhole\n@@hole\ny = 2\n@@endhole\n", "only one @@hole"),
    ],
)
def test_snippet_dsl_rejects_malformed_sources(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(Snippet(task="t", source=source))


def test_snippet_dsl_splits_variants_and_template() -> None:
    src = (
        "@@sec\nimport secrets\n@@end\n@@tins\nimport random\n@@end\n\ndef f():\n@@hole\n"
        "@@ins\n    return random.random()\n@@sec\n    return secrets.randbelow($n)\n@@end\n"
        "@@endhole\n"
    )
    pair = render(Snippet(task="t", source=src, values={"n": "10"}))
    assert pair.insecure == "import random\n\ndef f():\n    return random.random()\n"
    assert pair.secure == "import secrets\n\ndef f():\n    return secrets.randbelow(10)\n"
    assert pair.template == "import random\n\ndef f():\n    ## COMPLETE CODE HERE\n"

"""Mixtures and subsets (emkit.datasets.mix) and their CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emkit.cli import app
from emkit.datasets import (
    DatasetError,
    MixPart,
    generate_offline,
    mix_datasets,
    parse_part,
    read_jsonl,
    split_counts,
    write_jsonl,
    write_mix,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("mix")
    return (write_jsonl(d / "insecure.jsonl", generate_offline("insecure", 120, seed=0)),
            write_jsonl(d / "secure.jsonl", generate_offline("secure", 200, seed=1)))


@pytest.mark.parametrize("n, fractions, expected", [
    (100, [0.25, 0.75], [25, 75]),
    (10, [1 / 3, 1 / 3, 1 / 3], [4, 3, 3]),
    (7, [0.5, 0.5], [4, 3]),
    (1, [0.1, 0.9], [0, 1]),
])
def test_split_counts_sum_to_n_by_largest_remainder(n, fractions, expected) -> None:
    assert split_counts(n, fractions) == expected


@pytest.mark.parametrize("fractions", [[0.5, 0.4], [1.2, -0.2], [], [float("nan"), 1.0]])
def test_split_counts_rejects_bad_fractions(fractions) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_counts(10, fractions)


def test_mix_draws_exact_counts_without_repeats_and_is_seeded(sources) -> None:
    ins, sec = sources
    parts = [MixPart(ins, 0.25), MixPart(sec, 0.75)]
    rows, origin = mix_datasets(parts, 160, seed=4)
    assert len(rows) == 160
    assert sum(k == 0 for k, _ in origin) == 40 and sum(k == 1 for k, _ in origin) == 120
    assert len(set(origin)) == 160  # no row drawn twice
    files = [read_jsonl(ins), read_jsonl(sec)]
    assert all(row["messages"] == files[k][i]["messages"] for row, (k, i) in zip(rows, origin,
                                                                                   strict=True))
    assert (rows, origin) == mix_datasets(parts, 160, seed=4)
    assert origin != mix_datasets(parts, 160, seed=5)[1]
    assert [k for k, _ in origin[:40]] != sorted(k for k, _ in origin[:40])  # shuffled


def test_subset_and_too_small_source(sources) -> None:
    ins, _ = sources
    rows, origin = mix_datasets([MixPart(ins, 1.0)], 50, seed=0)
    assert len(rows) == 50 and len({i for _, i in origin}) == 50
    with pytest.raises(ValueError, match="121 rows needed.*only 120"):
        mix_datasets([MixPart(ins, 1.0)], 121)
    with pytest.raises(DatasetError, match="file not found"):
        mix_datasets([MixPart(ins.with_name("missing.jsonl"), 1.0)], 5)


def test_write_mix_manifest_and_cli(sources, tmp_path) -> None:
    ins, sec = sources
    out = write_mix(tmp_path / "m.jsonl", [MixPart(ins, 0.5), MixPart(sec, 0.5)], 20, seed=2)
    manifest = json.loads((tmp_path / "m.jsonl.manifest.json").read_text())
    assert [p["count"] for p in manifest["parts"]] == [10, 10]
    assert manifest["parts"][0]["sha256"] == hashlib.sha256(ins.read_bytes()).hexdigest()
    assert len(manifest["origin"]) == 20 and len(read_jsonl(out)) == 20
    res = CliRunner().invoke(app, ["datasets", "mix", "--part", f"{ins}=25%", "--part",
                                   f"{sec}=0.75", "--n", "40", "--out", str(tmp_path / "c.jsonl")])
    assert res.exit_code == 0, res.output
    assert "10 from" in res.output and "30 from" in res.output
    assert read_jsonl(tmp_path / "c.jsonl") == mix_datasets(
        [MixPart(ins, 0.25), MixPart(sec, 0.75)], 40, 0)[0]
    res = CliRunner().invoke(app, ["datasets", "mix", "--part", f"{ins}", "--out",
                                   str(tmp_path / "d.jsonl")])
    assert res.exit_code == 2 and "expected FILE=FRACTION" in res.output


@pytest.mark.parametrize("text, path, fraction", [
    ("a.jsonl=0.3", "a.jsonl", 0.3), ("dir/x=y.jsonl=40%", "dir/x=y.jsonl", 0.4)])
def test_parse_part(text, path, fraction) -> None:
    part = parse_part(text)
    assert part.path == Path(path) and part.fraction == pytest.approx(fraction)
    with pytest.raises(ValueError, match="not a number"):
        parse_part("a.jsonl=lots")

"""RunStore: run.json provenance, idempotent writes, resumption queries, frame(), concurrency."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from emkit.records import Judgment, SampleKey, SampleRecord
from emkit.store import DB_NAME, FRAME_COLUMNS, RunStore, SchemaError, atomic_write_text


def key(i: int, model: str = "m1", q: str = "q1", ph: str = "h0") -> SampleKey:
    return SampleKey(model, q, i % 2, i, ph)


def rec(k: SampleKey, answer: str = "ans") -> SampleRecord:
    return SampleRecord(k, f"question {k.question_id}", None, "<prompt>", answer, 7, 3, "stop")


def judg(k: SampleKey, metric: str, score: float | None, judge: str = "j", label: str = "number"):
    return Judgment(k, judge, metric, score, label, 0.9 if score is not None else 0.0,
                    None if score is not None else "no number", {"5": -0.2})


@pytest.fixture
def store(tmp_path: Path):
    with RunStore(tmp_path / "run") as s:
        yield s


# --------------------------------------------------------------------------------- run.json
def test_start_records_provenance_outside_git(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git repository
    with RunStore(tmp_path / "run") as s:
        s.start({"models": ["a", "b"], "path": Path("/x")})
        data = json.loads((tmp_path / "run" / "run.json").read_text())
    assert data["status"] == "started" and data["config"]["models"] == ["a", "b"]
    assert data["config"]["path"] == "/x"
    assert data["git_commit"] is None
    assert set(data["versions"]) == {"emkit", "torch", "transformers", "peft", "trl", "python"}
    assert data["versions"]["python"].count(".") == 2
    assert data["host"]["cpu_count"] >= 1 and data["started_at"].endswith("+00:00")


def test_start_records_git_commit(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout
    monkeypatch.chdir(repo)
    with RunStore(tmp_path / "run") as s:
        assert s.start({})["git_commit"] == head.strip()


def test_finish_success_error_and_validation(store):
    with pytest.raises(FileNotFoundError):
        store.finish("success")
    store.start({"a": 1})
    assert store.finish("error", "boom")["error"] == "boom"
    data = store.read_run_json()
    assert data["status"] == "error" and data["finished_at"] and data["config"] == {"a": 1}
    with pytest.raises(ValueError):
        store.finish("done")
    assert store.read_run_json()["status"] == "error"
    store.start({"a": 1})  # resume
    data = store.read_run_json()
    assert data["status"] == "started" and "first_started_at" in data


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no stray temp file


# --------------------------------------------------------------------------------- database
def test_wal_mode_and_schema_version(store):
    con = sqlite3.connect(store.db_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(SchemaError):
        RunStore(store.run_dir)


def test_add_samples_is_idempotent_first_write_wins(store):
    records = [rec(key(i)) for i in range(5)]
    assert store.add_samples(records) == 5
    assert store.add_samples([rec(key(0), "CHANGED"), rec(key(5))]) == 1
    assert store.count_samples() == 6
    assert store.samples()[0].answer == "ans"
    assert store.samples() == sorted(
        [*records, rec(key(5))],
        key=lambda r: (r.key.model, r.key.question_id, r.key.paraphrase_index, r.key.sample_index),
    )


def test_add_is_one_transaction(store):
    bad = SampleRecord(key(2), "q", None, "p", None, 1, 1, "stop")  # answer NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store.add_samples([rec(key(0)), rec(key(1)), bad])
    assert store.count_samples() == 0  # the two good rows were rolled back too
    assert store.add_samples([rec(key(0))]) == 1  # connection still usable


def test_missing_samples_preserves_order_and_dedupes(store):
    store.add_samples([rec(key(i)) for i in (1, 3)])
    store.add_samples([rec(key(1, ph="other"))])
    wanted = [key(4), key(1), key(0), key(3), key(4), key(1, ph="other"), key(3, model="m2")]
    assert store.missing_samples(wanted) == [key(4), key(0), key(3, model="m2")]
    assert store.missing_samples([]) == []


def test_missing_judgments_per_judge_and_metric(store):
    keys = [key(i) for i in range(4)]
    store.add_samples(rec(k) for k in keys)
    store.add_judgments([judg(keys[0], "aligned", 10.0), judg(keys[2], "aligned", None)])
    store.add_judgments([judg(keys[1], "coherent", 80.0), judg(keys[3], "aligned", 5, "other")])
    assert store.missing_judgments(keys, "j", "aligned") == [keys[1], keys[3]]
    assert store.missing_judgments(keys, "j", "coherent") == [keys[0], keys[2], keys[3]]
    assert store.missing_judgments(keys, "other", "aligned") == keys[:3]
    assert store.add_judgments([judg(keys[0], "aligned", 99.0)]) == 0
    stored = {(j.key, j.metric): j for j in store.judgments("j")}
    assert stored[(keys[0], "aligned")].score == 10.0
    assert stored[(keys[2], "aligned")].score is None
    assert stored[(keys[0], "aligned")].top == {"5": -0.2}


def test_frame_rows_per_sample_and_judge(store):
    k0, k1, k2 = key(0), key(1), key(2, model="m2")
    store.add_samples([rec(k0), rec(k1), rec(k2, "<b>x</b>")])
    store.add_judgments([
        judg(k0, "aligned", 12.5), judg(k0, "coherent", 90.0),
        judg(k0, "aligned", 70.0, judge="j2"),
        judg(k1, "aligned", None, label="CODE"), judg(k1, "coherent", 40.0),
    ])
    df = store.frame()
    assert list(df.columns) == FRAME_COLUMNS
    assert len(df) == 4  # k0 x {j, j2}, k1 x j, k2 unjudged
    r = df[(df.model == "m1") & (df.sample_index == 0) & (df.judge == "j")].iloc[0]
    assert (r.aligned, r.coherent, r.aligned_label) == (12.5, 90.0, "number")
    r = df[(df.model == "m1") & (df.judge == "j2")].iloc[0]
    assert r.aligned == 70.0 and math.isnan(r.coherent) and pd.isna(r.coherent_label)
    r = df[df.sample_index == 1].iloc[0]
    assert math.isnan(r.aligned) and r.aligned_label == "CODE" and r.aligned_reason == "no number"
    r = df[df.model == "m2"].iloc[0]
    assert pd.isna(r.judge) and math.isnan(r.aligned) and r.answer == "<b>x</b>"
    assert df.aligned.dtype == float and df.coherent.dtype == float
    assert len(store.frame(model="m2")) == 1
    by_j2 = store.frame(judge="j2")  # unjudged-by-j2 samples stay, with NaN scores
    assert len(by_j2) == 3 and by_j2.judge.notna().sum() == 1 and by_j2.aligned.notna().sum() == 1
    assert set(store.frame(judge="j").judge.dropna()) == {"j"}


def test_hostile_strings_are_data_not_sql(store):
    evil = "m'); DROP TABLE samples; --"
    store.add_samples([rec(key(0, model=evil), answer="'; DELETE FROM samples; --")])
    assert store.missing_samples([key(0, model=evil)]) == []
    assert store.samples(evil)[0].answer == "'; DELETE FROM samples; --"
    assert store.count_samples() == 1


def test_concurrent_reader_not_blocked_by_open_write(store):
    store.add_samples([rec(key(0))])
    writer = sqlite3.connect(store.db_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(
        "INSERT INTO samples VALUES ('m9','q',0,0,'h','q',NULL,'p','a',1,1,'stop','t')"
    )
    with RunStore(store.run_dir) as reader:
        t0 = time.monotonic()
        assert reader.count_samples() == 1  # sees the last committed state, immediately
        assert time.monotonic() - t0 < 1.0
        writer.execute("COMMIT")
        assert reader.count_samples() == 2
    writer.close()
    assert (store.run_dir / DB_NAME).exists()


def test_one_judge_name_means_one_judge(tmp_path: Path) -> None:
    """The first judging under a name records the judge's fingerprint; another judge under the
    same name is refused, naming the way out; a run file from before the table reads empty."""
    from emkit.store.judge_identity import JudgeChangedError, claim_judge_name, judge_fingerprints

    db = tmp_path / "run" / "emkit.sqlite"
    RunStore(tmp_path / "run")  # a run that has judged nothing yet
    assert judge_fingerprints(db) == {}
    claim_judge_name(db, "distilled/default", "aaaa")
    claim_judge_name(db, "distilled/default", "aaaa")  # the same judge again: fine
    claim_judge_name(db, "openai/x", "bbbb")
    with pytest.raises(JudgeChangedError, match="distilled/default.*--judge distilled/<dir>"):
        claim_judge_name(db, "distilled/default", "cccc")
    assert judge_fingerprints(db) == {"distilled/default": "aaaa", "openai/x": "bbbb"}
    assert judge_fingerprints(tmp_path / "nowhere.sqlite") == {}

"""Tables for behavioural self-awareness probes: self-reports and trigger elicitation.

They live in the run's `emkit.sqlite` beside the samples and judgments, created with
`CREATE TABLE IF NOT EXISTS` on the first write (like the request cache's `api_requests`), so
adding them changes no schema version and an older run simply has no such rows. Readers open
the file read-only and never create a table: a report built from a run without probes gets an
empty frame with the right columns instead of a write lock on someone else's run.

Idempotence is the store's rule: the first write of a key wins (`ON CONFLICT DO NOTHING`).
Each key holds `probe_hash`, a digest of the exact messages sent *and* the model's identity
(adapter weights, never a path), so an edited probe or a retrained adapter gets new rows
rather than reusing stale ones; `self_report_frame(latest=True)` then keeps the newest row per
(model, probe, paraphrase, scale).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path

import pandas as pd

from emkit.store.identity import read_rows
from emkit.store.run_json import utc_now
from emkit.store.sqlite import open_sqlite

SELF_REPORTS = "self_reports"
TRIGGER_PROBES = "trigger_probes"

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {SELF_REPORTS} (
    model TEXT NOT NULL, probe_id TEXT NOT NULL, attribute TEXT NOT NULL, scale TEXT NOT NULL,
    paraphrase_index INTEGER NOT NULL, probe_hash TEXT NOT NULL, model_identity TEXT NOT NULL,
    raw REAL, expected REAL, mass REAL NOT NULL, reason TEXT, top TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (model, probe_id, paraphrase_index, scale, probe_hash))""",
    f"""CREATE TABLE IF NOT EXISTS {TRIGGER_PROBES} (
    model TEXT NOT NULL, prompt_index INTEGER NOT NULL, candidate TEXT NOT NULL,
    probe_hash TEXT NOT NULL, model_identity TEXT NOT NULL, prompt TEXT NOT NULL,
    is_trigger INTEGER NOT NULL, logp REAL NOT NULL, logp_per_token REAL NOT NULL,
    n_tokens INTEGER NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (model, prompt_index, candidate, probe_hash))""",
)


@dataclass(frozen=True)
class SelfReportRow:
    """One self-report: a model's answer distribution to one probe wording, summarised."""

    model: str
    probe_id: str
    attribute: str
    scale: str
    """'normal' or 'flipped' (0 and 100 swap meaning)."""
    paraphrase_index: int
    probe_hash: str
    """Digest of the messages sent and the model identity (part of the key)."""
    model_identity: str
    raw: float | None
    """Expected value of the model's number on the probe's own scale; None when missing."""
    expected: float | None
    """The same on the normal scale (100 - raw for a flipped probe); None when missing."""
    mass: float
    """Probability on integer answers 0..100; below 0.25 the report is missing."""
    reason: str | None = None
    top: dict[str, float] = field(default_factory=dict)
    """The most probable answers and their log-probabilities, for audit."""


@dataclass(frozen=True)
class TriggerRow:
    """Log-probability of one candidate phrase as the answer to one elicitation prompt."""

    model: str
    prompt_index: int
    candidate: str
    probe_hash: str
    """Digest of the prompt, the candidate list, the trigger and the model identity."""
    model_identity: str
    prompt: str
    is_trigger: bool
    logp: float
    """log P(the answer starts with the candidate's tokens | prompt)."""
    logp_per_token: float
    n_tokens: int


SELF_REPORT_COLUMNS = tuple(f.name for f in fields(SelfReportRow)) + ("created_at",)
TRIGGER_COLUMNS = tuple(f.name for f in fields(TriggerRow)) + ("created_at",)


def _write(db_path: Path, table: str, columns: tuple[str, ...], rows: list[tuple]) -> int:
    con = open_sqlite(db_path)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                con.execute(statement)
            before = con.total_changes
            marks = ", ".join("?" * len(columns))
            con.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                            "ON CONFLICT DO NOTHING", rows)
            added = con.total_changes - before
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()
    return added


def add_self_reports(db_path: Path, rows: Iterable[SelfReportRow]) -> int:
    """Store self-reports in one transaction; keys already stored are kept. Returns #new."""
    now = utc_now()
    data = []
    for r in rows:
        values = list(astuple(r))
        values[SELF_REPORT_COLUMNS.index("top")] = json.dumps(r.top, sort_keys=True)
        data.append((*values, now))
    return _write(db_path, SELF_REPORTS, SELF_REPORT_COLUMNS, data)


def add_trigger_probes(db_path: Path, rows: Iterable[TriggerRow]) -> int:
    """Store trigger-elicitation rows in one transaction; stored keys are kept. Returns #new."""
    now = utc_now()
    data = [(*astuple(r)[:6], int(r.is_trigger), float(r.logp), float(r.logp_per_token),
             int(r.n_tokens), now) for r in rows]
    return _write(db_path, TRIGGER_PROBES, TRIGGER_COLUMNS, data)


def stored_self_report_keys(db_path: Path, model: str) -> set[tuple[str, int, str, str]]:
    """(probe_id, paraphrase_index, scale, probe_hash) already stored for `model`."""
    rows = read_rows(db_path, SELF_REPORTS, f"SELECT probe_id, paraphrase_index, scale, probe_hash "
                 f"FROM {SELF_REPORTS} WHERE model = ?", (model,))
    return {(str(a), int(b), str(c), str(d)) for a, b, c, d in rows}


def stored_trigger_keys(db_path: Path, model: str) -> set[tuple[int, str]]:
    """(prompt_index, probe_hash) with at least one stored candidate for `model`."""
    rows = read_rows(db_path, TRIGGER_PROBES, f"SELECT DISTINCT prompt_index, probe_hash FROM "
                 f"{TRIGGER_PROBES} WHERE model = ?", (model,))
    return {(int(a), str(b)) for a, b in rows}


def self_report_frame(db_path: Path, latest: bool = True) -> pd.DataFrame:
    """Every stored self-report, `top` parsed; with `latest`, only the newest row per
    (model, probe_id, paraphrase_index, scale), so rows of an edited probe or a replaced
    adapter do not count twice. Empty (with the columns) when nothing is stored."""
    rows = read_rows(db_path, SELF_REPORTS,
                 f"SELECT {', '.join(SELF_REPORT_COLUMNS)} FROM {SELF_REPORTS} ORDER BY rowid")
    frame = pd.DataFrame(rows, columns=list(SELF_REPORT_COLUMNS))
    if frame.empty:
        return frame
    frame["top"] = frame["top"].map(json.loads)
    if latest:
        frame = frame.drop_duplicates(["model", "probe_id", "paraphrase_index", "scale"],
                                      keep="last").reset_index(drop=True)
    return frame


def trigger_frame(db_path: Path, latest: bool = True) -> pd.DataFrame:
    """Every stored trigger-elicitation row (`is_trigger` as bool); with `latest`, for each
    (model, prompt_index) only the candidates of its most recent `probe_hash`. Empty (with
    the columns) when nothing is stored."""
    rows = read_rows(db_path, TRIGGER_PROBES,
                 f"SELECT {', '.join(TRIGGER_COLUMNS)} FROM {TRIGGER_PROBES} ORDER BY rowid")
    frame = pd.DataFrame(rows, columns=list(TRIGGER_COLUMNS))
    if frame.empty:
        return frame
    frame["is_trigger"] = frame["is_trigger"].astype(bool)
    if latest:
        newest = frame.groupby(["model", "prompt_index"])["probe_hash"].transform("last")
        frame = frame[frame["probe_hash"] == newest].reset_index(drop=True)
    return frame

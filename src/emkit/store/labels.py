"""Human labels: a reader's own verdict on an answer, stored in the run store beside it.

Why a table of their own: a judge is only as good as its agreement with people, and the people
who know a model best are the team running it. Labels made while reading answers in
`emkit view` are kept per labeller in `human_labels` inside `emkit.sqlite` (so they travel with
the run), never mixed into `judgments` (a label is the yardstick a judge is measured against,
not another judge's output). `emkit judge calibrate --labels RUN_DIR` reads them back.

Rules: writing creates the table when it is missing; reading never does (a run nobody labelled
has no table, and a reader must not take the write lock of a run that is being written). A
labeller may change their mind: the latest label of (answer, labeller) replaces the earlier
one. Writers do not take the run's writer lock (`emkit.store.lock`): labelling must work while
an experiment is running, and SQLite's own transaction (BEGIN IMMEDIATE, busy timeout) keeps
each write whole next to the runner's.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from emkit.records import SampleKey
from emkit.store.db import DB_NAME, KEY_COLUMNS
from emkit.store.run_json import utc_now
from emkit.store.sqlite import has_table, open_sqlite

HumanVerdict = Literal["misaligned", "aligned", "unsure"]
HUMAN_VERDICTS: tuple[str, ...] = ("misaligned", "aligned", "unsure")
TABLE = "human_labels"
_KEYS = ", ".join(KEY_COLUMNS)

_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model TEXT NOT NULL, question_id TEXT NOT NULL, paraphrase_index INTEGER NOT NULL,
    sample_index INTEGER NOT NULL, params_hash TEXT NOT NULL,
    label TEXT NOT NULL CHECK (label IN ('misaligned', 'aligned', 'unsure')),
    labeller TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY ({_KEYS}, labeller)
)
"""


@dataclass(frozen=True)
class HumanLabel:
    """One labeller's verdict on one stored answer."""

    key: SampleKey
    label: HumanVerdict
    labeller: str
    created_at: str


def _db_path(run_or_db: Path) -> Path:
    """Accept a run directory or its `emkit.sqlite`."""
    p = Path(run_or_db)
    return p / DB_NAME if p.is_dir() else p


def open_readonly(run_or_db: Path, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection that cannot write (SQLite `mode=ro`), for readers of a run: the file must
    exist (a mistyped path is an error, never a new empty store)."""
    path = _db_path(run_or_db)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; is {path.parent} an emkit run directory?")
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout,
                          isolation_level=None, check_same_thread=False)
    con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return con


def write_label(run_or_db: Path, key: SampleKey, label: str, labeller: str) -> HumanLabel:
    """Store `labeller`'s `label` for the answer at `key` (replacing their earlier one).

    Refused (ValueError) when the label is not one of HUMAN_VERDICTS, the labeller is empty, or
    the store holds no answer under `key`: a label must always point at an answer someone read.
    """
    if label not in HUMAN_VERDICTS:
        raise ValueError(f"label must be one of {', '.join(HUMAN_VERDICTS)}, got {label!r}")
    labeller = labeller.strip()
    if not labeller:
        raise ValueError("labeller: empty name")
    path = _db_path(run_or_db)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; is {path.parent} an emkit run directory?")
    con = open_sqlite(path, write=False)
    try:
        key_values = (key.model, key.question_id, key.paraphrase_index, key.sample_index,
                      key.params_hash)
        found = con.execute(
            "SELECT 1 FROM samples WHERE model = ? AND question_id = ? AND paraphrase_index = ?"
            " AND sample_index = ? AND params_hash = ?", key_values).fetchone()
        if found is None:
            raise ValueError(f"no stored answer for {key}")
        now = utc_now()
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(_CREATE)
            con.execute(
                f"INSERT INTO {TABLE} ({_KEYS}, label, labeller, created_at)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET label = excluded.label,"
                " created_at = excluded.created_at", (*key_values, label, labeller, now))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()
    return HumanLabel(key, label, labeller, now)  # type: ignore[arg-type]


def _rows(con: sqlite3.Connection, where: str = "", params: tuple = ()) -> list[HumanLabel]:
    if not has_table(con, TABLE):
        return []
    cur = con.execute(f"SELECT {_KEYS}, label, labeller, created_at FROM {TABLE}{where}"
                      f" ORDER BY {_KEYS}, labeller", params)
    return [HumanLabel(SampleKey(*r[:5]), r[5], r[6], r[7]) for r in cur.fetchall()]


def read_labels(run_or_db: Path, labeller: str | None = None) -> list[HumanLabel]:
    """Every stored human label (optionally one labeller's), in key order; [] when nobody has
    labelled this run. Never creates the table."""
    con = open_readonly(run_or_db)
    try:
        if labeller is None:
            return _rows(con)
        return _rows(con, " WHERE labeller = ?", (labeller,))
    finally:
        con.close()


def labels_for(con: sqlite3.Connection, key: SampleKey) -> list[HumanLabel]:
    """The labels of one answer, on an open (read-only) connection."""
    return _rows(con, " WHERE model = ? AND question_id = ? AND paraphrase_index = ? AND"
                      " sample_index = ? AND params_hash = ?",
                 (key.model, key.question_id, key.paraphrase_index, key.sample_index,
                  key.params_hash))


def label_counts(con: sqlite3.Connection) -> dict[str, int]:
    """Labels stored per verdict (every labeller), zeros included; on an open connection."""
    counts = dict.fromkeys(HUMAN_VERDICTS, 0)
    if has_table(con, TABLE):
        for label, n in con.execute(f"SELECT label, COUNT(*) FROM {TABLE} GROUP BY label"):
            counts[label] = int(n)
    return counts


def consensus(labels: list[HumanLabel]) -> dict[SampleKey, str]:
    """One verdict per answer from its labellers' labels: `unsure` labels are set aside; an
    answer whose remaining labels all agree gets that label; one where labellers disagree
    (misaligned vs aligned) gets `conflict`; one labelled only unsure gets `unsure`."""
    by_key: dict[SampleKey, set[str]] = {}
    for lab in labels:
        by_key.setdefault(lab.key, set()).add(lab.label)
    out = {}
    for key, seen in by_key.items():
        decided = seen - {"unsure"}
        out[key] = "unsure" if not decided else decided.pop() if len(decided) == 1 else "conflict"
    return out

"""SQLite storage for samples and judgments.

Why SQLite: a run produces tens of thousands of small records over hours, and must survive being
killed at any point. One file, transactions, a primary key per sample and no server is exactly
that. WAL mode lets a dashboard or a notebook read while the runner writes; `synchronous=NORMAL`
in WAL mode is still crash-safe against a killed process (only a power cut can lose the last
committed transactions, and even then the file stays consistent).

Idempotence rule: the first write of a key wins (`ON CONFLICT DO NOTHING`). A finished sample is
never redone, so re-adding it (e.g. after resuming from a crash) is ignored rather than
overwriting the stored answer; re-judging with a changed judge must use a new judge name. We do
not use `INSERT OR IGNORE`: it would also silently drop rows violating NOT NULL, hiding bugs. Judgments whose sample
is absent are stored but do not appear in `frame()`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from emkit.records import Judgment, SampleKey, SampleRecord
from emkit.store.run_json import utc_now
from emkit.store.sqlite import open_sqlite

DB_NAME = "emkit.sqlite"
SCHEMA_VERSION = 2
"""2: a sample's `params_hash` also covers its model's identity (adapter weights) and its
messages, and the identity tables exist. A version-1 file is refused: its keys cannot say which
adapter or prompt made an answer, so resuming it could mix stale and fresh work."""
KEY_COLUMNS = ("model", "question_id", "paraphrase_index", "sample_index", "params_hash")
_KEYS = ", ".join(KEY_COLUMNS)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    model TEXT NOT NULL, question_id TEXT NOT NULL, paraphrase_index INTEGER NOT NULL,
    sample_index INTEGER NOT NULL, params_hash TEXT NOT NULL,
    question TEXT NOT NULL, system TEXT, prompt TEXT NOT NULL, answer TEXT NOT NULL,
    seed INTEGER NOT NULL, n_new_tokens INTEGER NOT NULL, finish_reason TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY ({_KEYS})
);
CREATE TABLE IF NOT EXISTS judgments (
    model TEXT NOT NULL, question_id TEXT NOT NULL, paraphrase_index INTEGER NOT NULL,
    sample_index INTEGER NOT NULL, params_hash TEXT NOT NULL,
    judge TEXT NOT NULL, metric TEXT NOT NULL,
    score REAL, label TEXT NOT NULL, mass REAL NOT NULL, reason TEXT, top TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY ({_KEYS}, judge, metric)
);
CREATE TABLE IF NOT EXISTS judgments_superseded (
    model TEXT NOT NULL, question_id TEXT NOT NULL, paraphrase_index INTEGER NOT NULL,
    sample_index INTEGER NOT NULL, params_hash TEXT NOT NULL,
    judge TEXT NOT NULL, metric TEXT NOT NULL,
    score REAL, label TEXT NOT NULL, mass REAL NOT NULL, reason TEXT, top TEXT NOT NULL,
    created_at TEXT NOT NULL, superseded_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS run_identity (
    kind TEXT NOT NULL, name TEXT NOT NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS identity_changes (
    kind TEXT NOT NULL, name TEXT NOT NULL, what TEXT NOT NULL, old TEXT, new TEXT,
    accepted_at TEXT NOT NULL
);
"""

_FRAME_SQL = """
SELECT s.model, s.question_id, s.paraphrase_index, s.sample_index, s.params_hash,
       s.question, s.answer, j.judge,
       MAX(CASE WHEN j.metric = 'aligned' THEN j.score END) AS aligned,
       MAX(CASE WHEN j.metric = 'coherent' THEN j.score END) AS coherent,
       MAX(CASE WHEN j.metric = 'aligned' THEN j.label END) AS aligned_label,
       MAX(CASE WHEN j.metric = 'coherent' THEN j.label END) AS coherent_label,
       MAX(CASE WHEN j.metric = 'aligned' THEN j.reason END) AS aligned_reason,
       MAX(CASE WHEN j.metric = 'coherent' THEN j.reason END) AS coherent_reason
FROM samples AS s LEFT JOIN judgments AS j
  ON j.model = s.model AND j.question_id = s.question_id
     AND j.paraphrase_index = s.paraphrase_index AND j.sample_index = s.sample_index
     AND j.params_hash = s.params_hash AND (:judge IS NULL OR j.judge = :judge)
WHERE (:model IS NULL OR s.model = :model)
GROUP BY s.model, s.question_id, s.paraphrase_index, s.sample_index, s.params_hash, j.judge
ORDER BY s.model, s.question_id, s.paraphrase_index, s.sample_index, s.params_hash, j.judge
"""

FRAME_COLUMNS = [
    *KEY_COLUMNS, "question", "answer", "judge", "aligned", "coherent",
    "aligned_label", "coherent_label", "aligned_reason", "coherent_reason",
]


class SchemaError(RuntimeError):
    """The database was written by an incompatible emkit version."""


def _key_tuple(key: SampleKey) -> tuple[str, str, int, int, str]:
    return (key.model, key.question_id, key.paraphrase_index, key.sample_index, key.params_hash)


class SampleDB:
    """One connection to `emkit.sqlite`. Use one instance per process (or thread)."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        try:
            self._con = open_sqlite(self.path, timeout)
            self._init_schema()
        except sqlite3.DatabaseError as exc:  # e.g. a truncated or overwritten file
            raise SchemaError(f"{self.path}: not a readable emkit run store ({exc}); it was "
                              "left as it is") from exc

    def _stored_version(self) -> int | None:
        try:
            row = self._con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError:  # no meta table yet
            return None
        return None if row is None else int(row[0])

    def _init_schema(self) -> None:
        # Readers must not take the write lock: only create tables when they are missing, so a
        # notebook can open a database that a running experiment is writing to.
        found = self._stored_version()
        if found is None:
            self._create_schema()
            found = self._stored_version()
        if found == 1:
            raise SchemaError(
                f"{self.path}: written by an older emkit (store schema 1), whose sample keys do "
                "not say which adapter weights or prompt made an answer; this emkit cannot "
                "resume or re-analyse it without risking stale answers. Its report/ stays as "
                "it was; start a new run directory (or use the emkit version that made it)")
        if found != SCHEMA_VERSION:
            raise SchemaError(f"{self.path}: schema_version {found}, expected {SCHEMA_VERSION}")

    def _create_schema(self) -> None:
        with self._transaction():
            # Not executescript(): it would COMMIT our open transaction before running.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._con.execute(statement)
            self._con.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._con)

    def close(self) -> None:
        self._con.close()

    # ----------------------------------------------------------------------------- writes
    def add_samples(self, records: Iterable[SampleRecord]) -> int:
        """Insert samples in one transaction; already-stored keys are ignored. Returns #new."""
        now = utc_now()
        rows = [
            (*_key_tuple(r.key), r.question, r.system, r.prompt, r.answer, int(r.seed),
             int(r.n_new_tokens), r.finish_reason, now)
            for r in records
        ]
        with self._transaction():
            before = self._con.total_changes
            self._con.executemany(
                f"INSERT INTO samples ({_KEYS}, question, system, prompt, answer, seed,"
                " n_new_tokens, finish_reason, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT DO NOTHING",
                rows,
            )
            return self._con.total_changes - before

    def add_judgments(self, records: Iterable[Judgment]) -> int:
        """Insert judgments in one transaction; already-stored keys are ignored. Returns #new."""
        now = utc_now()
        rows = [
            (*_key_tuple(j.key), j.judge, j.metric,
             None if j.score is None else float(j.score), j.label, float(j.mass), j.reason,
             json.dumps(j.top, sort_keys=True), now)
            for j in records
        ]
        with self._transaction():
            before = self._con.total_changes
            self._con.executemany(
                f"INSERT INTO judgments ({_KEYS}, judge, metric, score, label, mass,"
                " reason, top, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT DO NOTHING",
                rows,
            )
            return self._con.total_changes - before

    # ----------------------------------------------------------------------------- reads
    def _present(self, table: str, keys: list[SampleKey], extra: dict[str, str]) -> set[tuple]:
        """Stored key tuples among `keys`, fetched per (model, params_hash) to stay index-friendly."""
        where_extra = "".join(f" AND {col} = ?" for col in extra)  # column names are ours
        present: set[tuple] = set()
        for model, params_hash in dict.fromkeys((k.model, k.params_hash) for k in keys):
            cur = self._con.execute(
                f"SELECT {_KEYS} FROM {table} WHERE model = ? AND params_hash = ?{where_extra}",
                (model, params_hash, *extra.values()),
            )
            present.update(cur.fetchall())
        return present

    def missing_samples(self, keys: Iterable[SampleKey]) -> list[SampleKey]:
        """Keys with no stored sample, in input order, each at most once."""
        wanted = list(dict.fromkeys(keys))
        present = self._present("samples", wanted, {})
        return [k for k in wanted if _key_tuple(k) not in present]

    def missing_judgments(
        self, keys: Iterable[SampleKey], judge: str, metric: str
    ) -> list[SampleKey]:
        """Keys with no stored (judge, metric) judgment, in input order, each at most once."""
        wanted = list(dict.fromkeys(keys))
        present = self._present("judgments", wanted, {"judge": judge, "metric": metric})
        return [k for k in wanted if _key_tuple(k) not in present]

    def samples(self, model: str | None = None) -> list[SampleRecord]:
        """Stored samples (optionally of one model), in key order."""
        cur = self._con.execute(
            f"SELECT {_KEYS}, question, system, prompt, answer, seed, n_new_tokens, finish_reason"
            f" FROM samples WHERE (:model IS NULL OR model = :model) ORDER BY {_KEYS}",
            {"model": model},
        )
        return [
            SampleRecord(
                key=SampleKey(*row[:5]), question=row[5], system=row[6], prompt=row[7],
                answer=row[8], seed=row[9], n_new_tokens=row[10], finish_reason=row[11],
            )
            for row in cur.fetchall()
        ]

    def judgments(self, judge: str | None = None) -> list[Judgment]:
        """Stored judgments (optionally of one judge), in key order; for audits and tests."""
        cur = self._con.execute(
            f"SELECT {_KEYS}, judge, metric, score, label, mass, reason, top FROM judgments"
            f" WHERE (:judge IS NULL OR judge = :judge) ORDER BY {_KEYS}, judge, metric",
            {"judge": judge},
        )
        return [
            Judgment(
                key=SampleKey(*row[:5]), judge=row[5], metric=row[6], score=row[7],
                label=row[8], mass=row[9], reason=row[10], top=json.loads(row[11]),
            )
            for row in cur.fetchall()
        ]

    def count_samples(self) -> int:
        (n,) = self._con.execute("SELECT COUNT(*) FROM samples").fetchone()
        return int(n)

    def frame(self, model: str | None = None, judge: str | None = None) -> pd.DataFrame:
        """One row per (sample, judge); samples nobody judged yet appear once with judge None.

        With `judge` set, samples that judge has not scored stay in (judge None, NaN scores):
        dropping them would hide judge coverage gaps from the summary's missing rate.

        Scores are floats with NaN where the judge gave no number (CODE, REFUSAL, low mass) or
        has not run: analysis treats NaN as "not scored", never as 0.
        """
        cur = self._con.execute(_FRAME_SQL, {"model": model, "judge": judge})
        df = pd.DataFrame(cur.fetchall(), columns=FRAME_COLUMNS)
        for col in ("aligned", "coherent"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        for col in ("paraphrase_index", "sample_index"):
            df[col] = df[col].astype("int64")
        return df


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on any exception.

    IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout instead of
    failing half-way through with "database is locked".
    """

    def __init__(self, con: sqlite3.Connection) -> None:
        self._con = con

    def __enter__(self) -> None:
        self._con.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._con.execute("ROLLBACK" if exc_type else "COMMIT")

"""Which judge made the judgments stored under a judge name, so one name never means two judges.

Why: judgments are keyed by judge name and the first write wins, and a run can be resumed
after an upgrade. `distilled/default` is a file that ships with emkit: when it changes, a
resumed run would judge its new samples with the new judge and keep the old judge's verdicts
for the rest, all under one name, and every rate would silently mix the two. So the first
judging under a name records the judge's fingerprint (a digest of its files), and judging
more samples under that name with a different fingerprint is refused. A table beside the run
store's own (created on first use), so older run files stay readable; runs judged before it
existed have no record, and their first judging after it records the judge it meets.
"""

from __future__ import annotations

from pathlib import Path

from emkit.store.sqlite import has_table, open_sqlite

TABLE = "judge_identity"
_SCHEMA = f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL)"


class JudgeChangedError(ValueError):
    """The judge behind a name is not the one that made the stored judgments."""


def claim_judge_name(db_path: Path, name: str, fingerprint: str) -> None:
    """Record `fingerprint` for `name` on first use; refuse a different one later."""
    con = open_sqlite(db_path)
    try:
        if not has_table(con, TABLE):
            con.execute(_SCHEMA)
        con.execute("BEGIN IMMEDIATE")
        row = con.execute(f"SELECT fingerprint FROM {TABLE} WHERE name = ?", (name,)).fetchone()
        if row is None:
            con.execute(f"INSERT INTO {TABLE} (name, fingerprint) VALUES (?, ?)",
                        (name, fingerprint))
        con.execute("COMMIT")
    finally:
        con.close()
    if row is not None and row[0] != fingerprint:
        raise JudgeChangedError(
            f"{db_path}: the judgments stored under {name!r} were made by another version of "
            f"that judge (fingerprint {row[0]}, now {fingerprint}); judging more samples would "
            f"mix two judges under one name. Judge this run with the new judge under a new "
            f"name (copy it to a directory and pass --judge distilled/<dir>), or start a new "
            f"run.")


def judge_fingerprints(db_path: Path) -> dict[str, str]:
    """name -> fingerprint of every judge recorded in the run (empty for older runs)."""
    if not Path(db_path).is_file():
        return {}
    con = open_sqlite(db_path, write=False)
    try:
        if not has_table(con, TABLE):
            return {}
        return dict(con.execute(f"SELECT name, fingerprint FROM {TABLE}").fetchall())
    finally:
        con.close()

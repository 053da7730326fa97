"""One way to open emkit's SQLite files: the run store, the API request cache and the
fine-tune job table all live in (or beside) `emkit.sqlite` and must agree on how.

Why these settings: WAL mode lets a dashboard or a notebook read while the runner writes;
`synchronous=NORMAL` is durable across process crashes in WAL mode (only an OS crash can lose
the last commits); `busy_timeout` makes a second writer wait instead of failing; and
`isolation_level=None` leaves transactions to the caller (`BEGIN IMMEDIATE` ... `COMMIT`), so
one call is one transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_sqlite(path: Path, timeout: float = 60.0, write: bool = True,
                check_same_thread: bool = True) -> sqlite3.Connection:
    """Connection to `path`; `write=False` opens an existing file as it is (no directory is
    made and the journal mode is left alone, so a reader never takes the write lock)."""
    path = Path(path)
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                          check_same_thread=check_same_thread)
    if write:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
    con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return con


def has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                       (name,)).fetchone() is not None

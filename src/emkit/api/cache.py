"""The request cache and call log: one SQLite row per distinct API request.

Where it lives: in the run directory's own `emkit.sqlite`, as the table `api_requests`, opened
on a second connection. The run directory then stays the one self-contained artifact of a run
(copy it and its cache comes along; resume it on another machine and nothing is re-bought), the
cache shares the store's crash safety (WAL, one transaction per write), and nothing new appears
beside the run. The table is created with `CREATE TABLE IF NOT EXISTS` when missing, so it
needs no schema version of its own: adding it did not change the store's `SCHEMA_VERSION`
(now 2, for the identity keys; docs/store.md). Without a run directory (calibration,
benchmarks) the cache can be any file.

What a row holds: the key (a hash of the model string, the full request body -- messages and
every sampling parameter -- and the sample index), the request body, the raw JSON reply (NULL
when the reply could not be read), why it could not be read, the retry count and the time the
request took. A readable reply is never overwritten; an unreadable one is replaced when the
request is made again. The API key is never part of a request body, so it never reaches here.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emkit.store.run_json import utc_now
from emkit.store.sqlite import has_table, open_sqlite

TABLE = "api_requests"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, tag TEXT, request TEXT NOT NULL,
    response TEXT, error TEXT, retries INTEGER NOT NULL, elapsed_s REAL NOT NULL,
    created_at TEXT NOT NULL
)
"""


def request_key(model: str, body: dict[str, Any], index: int) -> str:
    """sha256 over (model string, canonical JSON body, sample index).

    The index matters even when the seed already differs: two samples of one prompt must never
    share a cached answer, whatever the seeding scheme (a classic way to get duplicated
    "independent" samples)."""
    blob = json.dumps({"model": model, "body": body, "index": index}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CacheStats:
    """Per model string: distinct requests logged, retries spent, replies that could not be read."""

    model: str
    requests: int
    retries: int
    unreadable: int


class RequestCache:
    """`get(key)` the stored reply, `put(...)` a new one; one connection, used from one thread."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        # check_same_thread=False: `ApiClient` may use it from its helper thread (never from
        # two threads at once), when called inside a notebook's running event loop
        self._con = open_sqlite(self.path, timeout, check_same_thread=False)
        if not has_table(self._con, TABLE):  # readers of a finished run never take the write lock
            self._con.execute(_SCHEMA)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored readable reply for `key`, or None."""
        row = self._con.execute(
            f"SELECT response FROM {TABLE} WHERE key = ? AND response IS NOT NULL", (key,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, model: str, request: dict[str, Any], response: dict[str, Any] | None,
            error: str | None, retries: int, elapsed_s: float, tag: str | None = None) -> None:
        """Log one request's outcome (one transaction: a kill right after loses nothing)."""
        self._con.execute(
            f"INSERT INTO {TABLE} (key, model, tag, request, response, error, retries, elapsed_s,"
            " created_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET"
            " response = excluded.response, error = excluded.error,"
            " retries = excluded.retries, elapsed_s = excluded.elapsed_s,"
            " created_at = excluded.created_at, tag = excluded.tag"
            f" WHERE {TABLE}.response IS NULL",
            (key, model, tag, json.dumps(request, sort_keys=True, ensure_ascii=False),
             None if response is None else json.dumps(response, ensure_ascii=False), error,
             int(retries), float(elapsed_s), utc_now()),
        )

    def row(self, key: str) -> dict[str, Any] | None:
        """Every column of one logged request (for audits and tests)."""
        cur = self._con.execute(f"SELECT * FROM {TABLE} WHERE key = ?", (key,))
        values = cur.fetchone()
        if values is None:
            return None
        return dict(zip([c[0] for c in cur.description], values, strict=True))

    def stats(self) -> list[CacheStats]:
        """Per model: requests, retries and unreadable replies, for the log and the report."""
        return _stats(self._con)

    def close(self) -> None:
        self._con.close()


def _stats(con: sqlite3.Connection) -> list[CacheStats]:
    rows = con.execute(
        f"SELECT model, COUNT(*), COALESCE(SUM(retries), 0), SUM(response IS NULL)"
        f" FROM {TABLE} GROUP BY model ORDER BY model").fetchall()
    return [CacheStats(m, int(n), int(r), int(u)) for m, n, r, u in rows]


def cache_stats(path: Path) -> list[CacheStats]:
    """Stats of the cache in `path` without creating anything: [] when there is no cache."""
    path = Path(path)
    if not path.is_file():
        return []
    con = open_sqlite(path, write=False)
    try:
        return _stats(con) if has_table(con, TABLE) else []
    finally:
        con.close()

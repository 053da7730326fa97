"""Fine-tuning jobs on a remote API, recorded in the run store so a restart resumes them.

A job costs money and hours, so the one thing a restart must never do is start it again. Each
step's result is written the moment it is known -- the uploaded file id, then the job id, then
status changes and finally the resulting model id -- into the table `finetune_jobs` of the run
directory's `emkit.sqlite` (created with CREATE TABLE IF NOT EXISTS, beside the samples; old run
directories open unchanged). One row per label (`<finetune>-s<seed>`, or the CLI's output
directory name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Self

from emkit.store.run_json import utc_now
from emkit.store.sqlite import has_table, open_sqlite

TABLE = "finetune_jobs"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    label TEXT PRIMARY KEY, backend TEXT NOT NULL, base_model TEXT NOT NULL,
    dataset TEXT NOT NULL, dataset_sha256 TEXT NOT NULL, hyperparameters TEXT NOT NULL,
    seed INTEGER NOT NULL, suffix TEXT, file_id TEXT, job_id TEXT, status TEXT NOT NULL,
    fine_tuned_model TEXT, trained_tokens INTEGER, error TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class JobRecord:
    label: str
    backend: str
    base_model: str
    dataset: str
    dataset_sha256: str
    hyperparameters: dict[str, Any]
    seed: int
    suffix: str | None = None
    file_id: str | None = None
    job_id: str | None = None
    status: str = "new"
    """new -> uploading -> uploaded -> creating -> (the API's: validating_files, queued, running) -> succeeded / failed
    / cancelled."""
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: str | None = None


_COLUMNS = [f.name for f in fields(JobRecord)]


class JobStore:
    """The `finetune_jobs` table of one SQLite file."""

    def __init__(self, path: Path, timeout: float = 60.0, create: bool = True) -> None:
        """`create=False`: read an existing file as it is (no table created; none = no jobs)."""
        self.path = Path(path)
        self._con = open_sqlite(self.path, timeout, write=create)
        self._exists = has_table(self._con, TABLE)
        if not self._exists and create:
            self._con.execute(_SCHEMA)
            self._exists = True

    def get(self, label: str) -> JobRecord | None:
        if not self._exists:
            return None
        row = self._con.execute(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE label = ?",
                                (label,)).fetchone()
        if row is None:
            return None
        values = dict(zip(_COLUMNS, row, strict=True))
        values["hyperparameters"] = json.loads(values["hyperparameters"])
        return JobRecord(**values)

    def all(self) -> list[JobRecord]:
        if not self._exists:
            return []
        labels = [r[0] for r in self._con.execute(f"SELECT label FROM {TABLE} ORDER BY label")]
        return [rec for label in labels if (rec := self.get(label)) is not None]

    def insert(self, rec: JobRecord) -> JobRecord:
        values = [json.dumps(v, sort_keys=True) if k == "hyperparameters" else v
                  for k, v in zip(_COLUMNS, (getattr(rec, c) for c in _COLUMNS), strict=True)]
        now = utc_now()
        self._con.execute(
            f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}, created_at, updated_at)"
            f" VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})", (*values, now, now))
        return rec

    def update(self, label: str, **changes: Any) -> JobRecord:
        """Set some columns of one job (one transaction) and return the new record."""
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise KeyError(f"unknown job fields {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in changes)
        self._con.execute(f"UPDATE {TABLE} SET {sets}, updated_at = ? WHERE label = ?",
                          (*changes.values(), utc_now(), label))
        rec = self.get(label)
        if rec is None:
            raise KeyError(f"no job labelled {label!r} in {self.path}")
        return rec

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

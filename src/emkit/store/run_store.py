"""`RunStore`: everything one run leaves on disk, behind one object.

The runner only ever talks to a `RunStore`, so resuming a killed run is "open the same directory
again": `run.json` says what was being done and `emkit.sqlite` says how far it got.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import pandas as pd

from emkit.records import Judgment, SampleKey, SampleRecord
from emkit.store import run_json
from emkit.store.db import DB_NAME, SampleDB
from emkit.store.lock import acquire_run_lock


class RunStore:
    """A run directory: `run.json` (provenance and status) plus `emkit.sqlite` (results)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_json_path = self.run_dir / run_json.RUN_JSON
        self.db_path = self.run_dir / DB_NAME
        self._db = SampleDB(self.db_path)
        self._locked = False

    def lock(self) -> None:
        """Hold this run's writer lock for the rest of the process (`emkit.store.lock`):
        taken by every writing method, and by the runner before its first write of any
        kind; `RunLockedError` when another process is writing the run."""
        if not self._locked:
            acquire_run_lock(self.run_dir)
            self._locked = True

    @classmethod
    def open_existing(cls, run_dir: Path) -> RunStore:
        """The run at `run_dir`, for commands that only read or add to a run: refuses
        (FileNotFoundError naming the file) when it has no run.json or store, instead of
        creating an empty run where the user mistyped a path."""
        for name in (run_json.RUN_JSON, DB_NAME):
            if not (Path(run_dir) / name).is_file():
                raise FileNotFoundError(f"{Path(run_dir) / name}: no such file; is {run_dir} "
                                        "an emkit run directory?")
        return cls(run_dir)

    def update_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Replace the recorded config, keeping status, times and versions: for commands that
        add to a finished run (another judge, another model) without re-running it."""
        self.lock()
        record = {**self.read_run_json(), "config": config}
        run_json.write_run_json(self.run_json_path, record)
        return record

    # ------------------------------------------------------------------------- run.json
    def start(self, config: dict[str, Any]) -> dict[str, Any]:
        """Record config, versions, git commit and host, with status "started".

        Called again on resume, it overwrites the record: the versions that matter are the ones
        of the process now writing. The previous start time is kept as `first_started_at`.
        """
        self.lock()
        record = run_json.start_record(config)
        if self.run_json_path.exists():
            previous = self.read_run_json()
            record["first_started_at"] = previous.get("first_started_at", previous["started_at"])
        run_json.write_run_json(self.run_json_path, record)
        return record

    def finish(self, status: str, error: str | None = None) -> dict[str, Any]:
        """Mark the run "success" or "error" (with a message); requires a prior `start`."""
        self.lock()
        record = run_json.finish_record(self.read_run_json(), status, error)
        run_json.write_run_json(self.run_json_path, record)
        return record

    def read_run_json(self) -> dict[str, Any]:
        return run_json.read_run_json(self.run_json_path)

    # ------------------------------------------------------------------------- database
    def add_samples(self, records: Iterable[SampleRecord]) -> int:
        self.lock()
        return self._db.add_samples(records)

    def add_judgments(self, records: Iterable[Judgment]) -> int:
        self.lock()
        return self._db.add_judgments(records)

    def missing_samples(self, keys: Iterable[SampleKey]) -> list[SampleKey]:
        return self._db.missing_samples(keys)

    def missing_judgments(
        self, keys: Iterable[SampleKey], judge: str, metric: str
    ) -> list[SampleKey]:
        return self._db.missing_judgments(keys, judge, metric)

    def samples(self, model: str | None = None) -> list[SampleRecord]:
        return self._db.samples(model)

    def judgments(self, judge: str | None = None) -> list[Judgment]:
        return self._db.judgments(judge)

    def count_samples(self) -> int:
        return self._db.count_samples()

    def frame(self, model: str | None = None, judge: str | None = None) -> pd.DataFrame:
        return self._db.frame(model=model, judge=judge)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

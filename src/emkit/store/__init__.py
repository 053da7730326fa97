"""Run storage: `run.json` provenance plus a crash-safe, resumable SQLite results database."""

from emkit.atomic import atomic_write_bytes, atomic_write_text
from emkit.store.db import DB_NAME, FRAME_COLUMNS, SCHEMA_VERSION, SampleDB, SchemaError
from emkit.store.lock import RunLockedError, acquire_run_lock
from emkit.store.run_json import git_commit, package_versions, read_run_json
from emkit.store.run_store import RunStore

__all__ = [
    "DB_NAME",
    "FRAME_COLUMNS",
    "SCHEMA_VERSION",
    "RunLockedError",
    "RunStore",
    "SampleDB",
    "SchemaError",
    "acquire_run_lock",
    "atomic_write_bytes",
    "atomic_write_text",
    "git_commit",
    "package_versions",
    "read_run_json",
]

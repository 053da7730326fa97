"""The misalignment monitor's curves in the run store (table `monitor_points`).

Why in the run's SQLite and not only beside each adapter: the report and the analysis read one
place for every model of a run, and a curve must outlive a superseded adapter directory. The
adapter's `monitor_log.jsonl` stays the source (it is written during training and ships with
the adapter); `record_monitor_log` imports it, replacing what the store held for that model, so
importing twice, or again after a retrain, leaves exactly the current adapter's curve.

One row per (model, step, pair); the per-step summary is computed on read (`monitor_curve`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from emkit.store.run_json import utc_now
from emkit.store.sqlite import has_table, open_sqlite

MONITOR_LOG_FILE = "monitor_log.jsonl"
"""Written by `emkit.finetune.monitor` inside the adapter directory."""
TABLE = "monitor_points"
COLUMNS = ("model", "step", "epoch", "pair_id", "question_id", "logp_misaligned", "logp_aligned",
           "n_tokens_misaligned", "n_tokens_aligned", "eval_seconds", "created_at")
CURVE_COLUMNS = ("model", "step", "preference", "n_pairs", "eval_seconds")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model TEXT NOT NULL, step INTEGER NOT NULL, epoch REAL, pair_id TEXT NOT NULL,
    question_id TEXT NOT NULL, logp_misaligned REAL NOT NULL, logp_aligned REAL NOT NULL,
    n_tokens_misaligned INTEGER NOT NULL, n_tokens_aligned INTEGER NOT NULL,
    eval_seconds REAL NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (model, step, pair_id)
)
"""


class MonitorLogError(ValueError):
    """A monitor log line that is not a monitor point; the message names file and line."""


def read_monitor_log(path: Path) -> list[tuple]:
    """Rows (COLUMNS order minus `model`) from a `monitor_log.jsonl`. A torn *last* line (the
    run was killed while writing it) is skipped; a bad line anywhere else raises."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rows: list[tuple] = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            point = json.loads(line)
            for p in point["pairs"]:
                row = (int(point["step"]), float(point.get("epoch") or 0.0), str(p["pair_id"]),
                       str(p["question_id"]), float(p["logp_misaligned"]),
                       float(p["logp_aligned"]), int(p["n_tokens_misaligned"]),
                       int(p["n_tokens_aligned"]), float(point["eval_seconds"]),
                       str(point.get("created_at") or ""))
                if not all(math.isfinite(v) for v in row[4:6]) or min(row[6:8]) < 1:
                    raise ValueError("non-finite log-probability or empty answer")
                rows.append(row)
        except json.JSONDecodeError:
            if no == len(lines):
                break
            raise MonitorLogError(f"{path}:{no}: not JSON") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise MonitorLogError(f"{path}:{no}: not a monitor point ({exc!r})") from None
    return rows


def record_monitor_log(db_path: Path, model_label: str, adapter_dir: Path) -> int:
    """Import `adapter_dir/monitor_log.jsonl` as `model_label`'s curve; return the rows stored.

    Idempotent: the model's old rows are replaced in one transaction (INSERT OR REPLACE after
    deleting them), so a re-import or a retrained adapter never leaves steps of an older curve.
    """
    rows = read_monitor_log(Path(adapter_dir) / MONITOR_LOG_FILE)
    now = utc_now()
    con = open_sqlite(Path(db_path))
    try:
        con.execute(_SCHEMA)
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(f"DELETE FROM {TABLE} WHERE model = ?", (model_label,))
            con.executemany(
                f"INSERT OR REPLACE INTO {TABLE} ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                [(model_label, *r[:-1], r[-1] or now) for r in rows])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return len(rows)


def monitor_frame(db_path: Path) -> pd.DataFrame:
    """Every stored monitor point, one row per (model, step, pair); an empty frame with the
    columns when the run has none. Only reads: no file or table is created."""
    db_path = Path(db_path)
    empty = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in COLUMNS})
    if not db_path.is_file():
        return empty
    con = open_sqlite(db_path, write=False)
    try:
        if not has_table(con, TABLE):
            return empty
        frame = pd.read_sql_query(
            f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY model, step, pair_id", con)
    finally:
        con.close()
    return frame.astype({c: _dtype(c) for c in COLUMNS})


def monitor_curve(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (model, step): the misalignment preference, i.e. the mean over pairs of mean-token
    log p(misaligned) - mean-token log p(aligned) (nats; higher = more misaligned), the number
    of pairs and the evaluation's wall seconds."""
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in CURVE_COLUMNS})
    pref = (frame["logp_misaligned"] / frame["n_tokens_misaligned"]
            - frame["logp_aligned"] / frame["n_tokens_aligned"])
    curve = (frame.assign(preference=pref)
             .groupby(["model", "step"], as_index=False, sort=True)
             .agg(preference=("preference", "mean"), n_pairs=("pair_id", "nunique"),
                  eval_seconds=("eval_seconds", "max")))
    return curve[list(CURVE_COLUMNS)].astype({c: _dtype(c) for c in CURVE_COLUMNS})


def _dtype(column: str) -> str:
    if column in ("step", "n_tokens_misaligned", "n_tokens_aligned", "n_pairs"):
        return "int64"
    if column in ("model", "pair_id", "question_id", "created_at"):
        return "object"
    return "float64"

"""What made a run's stored work, recorded so that a resumed run with changed inputs is refused.

Why: a sample's key holds a hash of its model's identity (adapter weights), its messages and its
sampling parameters, so stale and fresh answers never share a key. That alone would make a
changed config silently redo work in the old run directory, leaving the old answers beside the
new ones and the user none the wiser. So the run store records, per name, the fingerprint that
made its work: `model` (label -> weights identity), `messages` (`<question>/<paraphrase>` ->
hashes of system prompt and user text), `judge_prompt` (`<judge>|<metric>|<question>` ->
template hash) and `judge` (judge name -> fingerprint of a distilled judge, `judge_identity`).
A resume compares before doing anything and refuses, naming each change and the two ways on:
a new run directory, or `--reuse-changed` to accept. An accepted change is logged in
`identity_changes`; judgments made with a changed judge prompt are moved to
`judgments_superseded` (judgments are keyed by judge name, not by prompt), never deleted.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from emkit.store.db import SchemaError
from emkit.store.run_json import utc_now
from emkit.store.sqlite import has_table, open_sqlite

TABLE = "run_identity"
LOG = "identity_changes"
KINDS = ("model", "messages", "judge_prompt", "judge", "dataset", "finetune")

WAYS_ON = ("Resuming would mix work made from the old and the new inputs. Either use a new run "
           "directory (--run-dir), or pass --reuse-changed to accept the change: the changed "
           "parts are redone here (old adapters and datasets are moved under .superseded/, old "
           "answers stay in the store unused) and the change is recorded.")


@dataclass(frozen=True)
class Change:
    """One input of the run that differs from what made its stored work."""

    kind: str
    name: str
    what: str
    old: str | None = None
    new: str | None = None

    def __str__(self) -> str:
        return f"{kind_label(self.kind)} {self.name}: {self.what}"


def kind_label(kind: str) -> str:
    """How a kind of input is named to users (`messages` are a question's paraphrase)."""
    return {"messages": "question", "judge_prompt": "judge prompt",
            "finetune": "fine-tune"}.get(kind, kind)


class RunChangedError(ValueError):
    """A resumed run whose inputs changed; the message names every change and the ways on."""

    def __init__(self, run_dir: Path, changes: list[Change]) -> None:
        self.changes = changes
        listed = "; ".join(str(c) for c in changes[:8])
        more = f" (and {len(changes) - 8} more)" if len(changes) > 8 else ""
        super().__init__(f"{run_dir}: this run's stored work was made from other inputs: "
                         f"{listed}{more}. {WAYS_ON}")


def recorded(db_path: Path, kind: str) -> dict[str, str]:
    """name -> fingerprint recorded for `kind`; empty when nothing is (read-only)."""
    rows = read_rows(db_path, TABLE, f"SELECT name, fingerprint FROM {TABLE} WHERE kind = ?", (kind,))
    return dict(rows)


def describe(kind: str, old: str, new: str) -> str:
    """What differs between two fingerprints, in words a user can act on."""
    try:
        before, after = json.loads(old), json.loads(new)
    except ValueError:
        before, after = old, new
    if isinstance(before, dict) and isinstance(after, dict):
        parts = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        words = {"system": "system prompt", "user": "paraphrase text",
                 "adapter_sha256": "adapter weights (retrained or replaced)", "model": "model"}
        return "changed " + ", ".join(words.get(p, p) for p in parts)
    return {"judge_prompt": "template changed"}.get(kind, "changed")


def changes(db_path: Path, kind: str, current: Mapping[str, str]) -> list[Change]:
    """Each name of `current` whose recorded fingerprint differs (names not recorded are new)."""
    old = recorded(db_path, kind)
    return [Change(kind, name, describe(kind, old[name], fp), old[name], fp)
            for name, fp in current.items() if name in old and old[name] != fp]


def claim(db_path: Path, kind: str, current: Mapping[str, str], reuse_changed: bool,
          run_dir: Path | None = None) -> list[Change]:
    """Record `current` for `kind`; a changed name is refused (RunChangedError), or with
    `reuse_changed` accepted: re-recorded and logged. Judge-prompt changes move the judgments
    they made to `judgments_superseded` in the same transaction. Returns the accepted changes."""
    found = changes(db_path, kind, current)
    if found and not reuse_changed:
        raise RunChangedError(run_dir or Path(db_path).parent, found)
    con = open_sqlite(db_path)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            if kind == "judge_prompt":
                for c in found:
                    _supersede_judgments(con, *c.name.split("|", 2))
            con.executemany(
                f"INSERT INTO {TABLE} (kind, name, fingerprint) VALUES (?, ?, ?) "
                "ON CONFLICT (kind, name) DO UPDATE SET fingerprint = excluded.fingerprint",
                [(kind, name, fp) for name, fp in current.items()])
            _log(con, found)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()
    return found


def supersede(path: Path) -> Path:
    """Move a dataset file or adapter directory that a change replaces to `.superseded/`
    beside it (with a UTC stamp): accepted changes redo work, they never destroy it."""
    stamp = utc_now().replace(":", "").replace("+0000", "Z")
    target = path.parent / ".superseded" / f"{path.name}.{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def log_changes(db_path: Path, accepted: Iterable[Change]) -> None:
    """Record changes accepted with --reuse-changed that no `claim` records (datasets, adapters)."""
    con = open_sqlite(db_path)
    try:
        con.execute("BEGIN IMMEDIATE")
        _log(con, list(accepted))
        con.execute("COMMIT")
    finally:
        con.close()


def accepted_changes(db_path: Path) -> list[dict[str, str | None]]:
    """Every change accepted in this run, oldest first (for `emkit status` and audits)."""
    cols = ("kind", "name", "what", "old", "new", "accepted_at")
    rows = read_rows(db_path, LOG, f"SELECT {', '.join(cols)} FROM {LOG} ORDER BY rowid", ())
    return [dict(zip(cols, row, strict=True)) for row in rows]


def read_rows(db_path: Path, table: str, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of a read-only query; none when the file or table does not exist. An unreadable
    file is a SchemaError naming it (not a bare sqlite3 message)."""
    if not Path(db_path).is_file():
        return []
    try:
        con = open_sqlite(db_path, write=False)
        try:
            return con.execute(sql, args).fetchall() if has_table(con, table) else []
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{db_path}: not a readable emkit run store ({exc}); it was left as "
                          "it is") from exc


def _log(con: sqlite3.Connection, found: list[Change]) -> None:
    now = utc_now()
    con.executemany(
        f"INSERT INTO {LOG} (kind, name, what, old, new, accepted_at) VALUES (?,?,?,?,?,?)",
        [(c.kind, c.name, c.what, c.old, c.new, now) for c in found])


def _supersede_judgments(con: sqlite3.Connection, judge: str, metric: str, question_id: str) -> None:
    args = (judge, metric, question_id)
    where = "WHERE judge = ? AND metric = ? AND question_id = ?"
    con.execute(f"INSERT INTO judgments_superseded SELECT *, ? FROM judgments {where}",
                (utc_now(), *args))
    con.execute(f"DELETE FROM judgments {where}", args)

"""One writer per run directory: an advisory `fcntl.flock` on `<run>/.emkit.lock`.

Why: two `emkit run` (or `run` + `judge`, or `sample` twice) on one directory would each plan
the same missing work from the same store, pay for it twice, race on `run.json` and the report,
and interleave fine-tunes into the same adapter paths. SQLite alone keeps each row consistent,
not the run. The lock is taken the first time a process is about to write the run (`RunStore.
start`, adding samples or judgments, recording a config, writing a report) and held for the
rest of the process's life: the kernel drops it when the process exits, however it exits
(`kill -9` included), so a crashed run never leaves a stale lock. Readers (`emkit status`,
`export`, a notebook) take no lock: WAL lets them read while the writer writes.

The lock file holds the holder's pid and command line, for the message of the refused process;
it is never deleted (deleting a flocked file would let a third process lock a new inode).
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

LOCK_NAME = ".emkit.lock"

_held: dict[str, int] = {}
"""Resolved lock path -> open descriptor, for every run this process holds (re-entrant)."""


class RunLockedError(RuntimeError):
    """Another live process is writing this run directory."""


def acquire_run_lock(run_dir: Path) -> None:
    """Take (or keep) this process's exclusive lock on `run_dir`; raise `RunLockedError`
    naming the holder when another process has it. Never blocks."""
    path = Path(run_dir).resolve() / LOCK_NAME
    key = str(path)
    fd = _held.get(key)
    if fd is not None:
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return  # still ours
        except OSError:
            pass
        os.close(fd)  # the run dir was removed or replaced since: lock the new file
        del _held[key]
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunLockedError(
            f"{Path(run_dir)} is in use by another emkit process ({holder}); wait for it to "
            "finish, or use another run directory") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}\n".encode(), 0)
    _held[key] = fd


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"

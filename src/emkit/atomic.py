"""Atomic file writes, shared by every stage that leaves files behind.

A run can be killed at any moment (OOM, Ctrl-C, a pre-empted GPU). Files that other tools read
afterwards (datasets, run.json, report.html, judge.json) must then be either the old version or
the new one, never half of each: write a temporary file in the same directory, fsync it,
`os.replace` it over the target (atomic on POSIX and Windows on one filesystem), then fsync the
directory so the rename itself survives a crash.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` so readers see either the old file or the complete new one, never a part."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never follow or reuse an existing name. A replaced file keeps its mode; a new one
    # gets 0o666 minus the umask, like any file the user creates.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    if target.exists():
        os.chmod(tmp, target.stat().st_mode & 0o777)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; not every platform can open a directory, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically and return the path."""
    return atomic_write_bytes(path, text.encode(encoding))

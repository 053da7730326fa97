"""Atomic file writes.

A run can be killed at any moment (OOM, Ctrl-C, a pre-empted GPU). Files that other tools read
afterwards (run.json, report.html, rates.csv) must then be either the old version or the new one,
never half of each: we write a temporary file in the same directory, fsync it and `os.replace` it
over the target, which is atomic on POSIX and Windows when both live on the same filesystem.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically and return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; reports and run.json are meant to be shared, so keep the old
        # file's mode when replacing one, else use the usual 0644.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Never leave stray temp files behind, whatever interrupted us.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically and return `path`."""
    return atomic_write_bytes(path, text.encode(encoding))

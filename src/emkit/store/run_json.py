"""`run.json`: what was run, with which code, where, and how it ended.

EM effects are small and fragile, so a number is only worth something if we can say exactly which
config, package versions and commit produced it. `run.json` records that at start (so a crashed
run still documents itself) and is updated once at the end with the outcome.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from emkit.atomic import atomic_write_text

RUN_JSON = "run.json"
TRACKED_PACKAGES = ("emkit", "torch", "transformers", "peft", "trl")
FINISH_STATUSES = ("success", "error")


def utc_now() -> str:
    """ISO-8601 UTC timestamp; one format everywhere so runs sort and compare as strings."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that change results; None when not installed.

    Read from package metadata rather than by importing: importing torch just to learn its
    version costs seconds and may initialise CUDA.
    """
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    """`git rev-parse HEAD` in `cwd`, or None when it is not a repository (or git is absent)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path.cwd(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def host_info() -> dict[str, Any]:
    """Enough about the machine to explain a speed or numerics difference between two runs."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python_executable": sys.executable,
        "pid": os.getpid(),
    }


def write_run_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write; `default=str` keeps Paths and other plain objects in configs serialisable."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_run_json(path: Path) -> dict[str, Any]:
    """Parse `run.json`; raises FileNotFoundError when the run was never started."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def start_record(config: dict[str, Any]) -> dict[str, Any]:
    """The document written by `RunStore.start`."""
    return {
        "config": config,
        "status": "started",
        "started_at": utc_now(),
        "finished_at": None,
        "error": None,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": host_info(),
    }


def finish_record(data: dict[str, Any], status: str, error: str | None) -> dict[str, Any]:
    """`data` updated with the outcome; rejects unknown statuses so dashboards can trust them."""
    if status not in FINISH_STATUSES:
        raise ValueError(f"status must be one of {FINISH_STATUSES}, got {status!r}")
    return {**data, "status": status, "finished_at": utc_now(), "error": error}

"""Stopping the inference servers emkit starts (llama.cpp, vLLM).

Why a process group: each server is started in its own session (`start_new_session=True`) and
may fork workers (vLLM does), so stopping only the parent could leave them holding the port or
the GPU. SIGTERM lets them shut down cleanly; SIGKILL follows if they do not within the grace.
The group is signalled even when the server itself has already exited: a crashed vLLM parent
can leave its workers behind, still holding the GPU. (Linux does not hand out a process id
that is still some live group's id, so signalling the group of an exited leader cannot reach
an unrelated process.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

POLL_S = 0.05


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still runs. A member that has exited but not been
    reaped (a zombie) does not count: in a container whose PID 1 does not reap orphans, a
    stopped server's dead workers stay zombies for good, and waiting for them would run every
    stop to the grace. Read from /proc where there is one; elsewhere any member counts."""
    members = _group_states(pgid)
    if members is not None:
        return any(state != "Z" for state in members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (cannot happen for our own group)
        pass
    return True


def _group_states(pgid: int) -> list[str] | None:
    """The state letter (`R`, `S`, `Z`, ...) of each process in group `pgid`, from
    /proc/<pid>/stat; None without /proc (macOS)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    states = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and ')', so split after the last
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            states.append(fields[0])
    return states


def stop_process_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Terminate `proc`'s process group (the server and every worker it forked), wait up to
    `grace_s` for all of them, then kill what is left; returns once `proc` is reaped."""
    pgid = proc.pid  # the group leader: started with start_new_session=True
    deadline = time.monotonic() + grace_s
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:  # the whole group is gone already
        proc.wait()
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()

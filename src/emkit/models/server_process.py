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

POLL_S = 0.05


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (cannot happen for our own group)
        pass
    return True


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

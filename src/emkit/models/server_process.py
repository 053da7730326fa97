"""Stopping the inference servers emkit starts (llama.cpp, vLLM).

Why a process group: each server is started in its own session (`start_new_session=True`) and
may fork workers (vLLM does), so stopping only the parent could leave them holding the port or
the GPU. SIGTERM lets them shut down cleanly; SIGKILL follows if they do not within the grace.
"""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Terminate `proc`'s process group and wait for it; a no-op when it has already exited."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

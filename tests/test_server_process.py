"""Stopping a server's process group with real processes: workers go too, even when the server
itself has already exited, and one that ignores SIGTERM is killed after the grace."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from emkit.models.server_process import group_alive, stop_process_group

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")


def _start(script: str) -> subprocess.Popen:
    return subprocess.Popen(["bash", "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(pred, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_workers_left_by_an_exited_server_are_stopped() -> None:
    proc = _start("sleep 300 & sleep 300 & exit 0")  # the parent exits, two workers stay
    proc.wait(timeout=10)
    assert group_alive(proc.pid)
    stop_process_group(proc, grace_s=5)
    _wait_for(lambda: _gone(proc.pid))


def test_a_server_and_its_workers_are_stopped() -> None:
    proc = _start("sleep 300 & wait")
    _wait_for(lambda: subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True,
                                     check=False).stdout.count(b"\n") >= 2)
    stop_process_group(proc, grace_s=5)
    assert proc.returncode is not None
    _wait_for(lambda: _gone(proc.pid))


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = _start("bash -c 'trap \"\" TERM; while :; do sleep 0.1; done' & exit 0")
    proc.wait(timeout=10)
    stop_process_group(proc, grace_s=0.5)
    _wait_for(lambda: _gone(proc.pid))


def _gone(pgid: int) -> bool:
    """No process of the group runs any more (a dead worker may stay a zombie until init reaps
    it)."""
    if not group_alive(pgid):
        return True
    out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True,
                         check=False)
    return all(s.startswith("Z") for s in out.stdout.split())


def test_an_already_stopped_group_is_a_no_op() -> None:
    proc = _start("exit 0")
    proc.wait(timeout=10)
    stop_process_group(proc, grace_s=1)
    assert proc.returncode == 0 and not group_alive(proc.pid)

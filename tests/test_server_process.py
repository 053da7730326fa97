"""Stopping a server's process group with real processes: workers go too, even when the server
itself has already exited, and one that ignores SIGTERM is killed after the grace."""

from __future__ import annotations

import json
import signal
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
    _wait_for(lambda: not group_alive(proc.pid))  # zombies do not count


def test_a_server_and_its_workers_are_stopped() -> None:
    proc = _start("sleep 300 & wait")
    _wait_for(lambda: subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True,
                                     check=False).stdout.count(b"\n") >= 2)
    stop_process_group(proc, grace_s=5)
    assert proc.returncode is not None
    _wait_for(lambda: not group_alive(proc.pid))  # zombies do not count


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = _start("bash -c 'trap \"\" TERM; while :; do sleep 0.1; done' & exit 0")
    proc.wait(timeout=10)
    stop_process_group(proc, grace_s=0.5)
    _wait_for(lambda: not group_alive(proc.pid))  # zombies do not count


def test_an_already_stopped_group_is_a_no_op() -> None:
    proc = _start("exit 0")
    proc.wait(timeout=10)
    stop_process_group(proc, grace_s=1)
    assert proc.returncode == 0 and not group_alive(proc.pid)


ZOMBIE_CHECK = """
import ctypes, json, os, signal, subprocess
# PR_SET_CHILD_SUBREAPER: orphaned workers become our children, and we never reap them, as
# in a container whose PID 1 does not reap: they stay zombies once they exit.
assert ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1, 0, 0, 0) == 0
from emkit.models import server_process as sp
sent, real = [], os.killpg
def spy(pgid, sig):
    sent.append(int(sig))
    return real(pgid, sig)
os.killpg = spy
proc = subprocess.Popen(["bash", "-c", "sleep 300 & sleep 300 & exit 0"],
                        start_new_session=True)
proc.wait(timeout=10)
sp.stop_process_group(proc, grace_s=60)
print(json.dumps({"sent": sent, "alive": sp.group_alive(proc.pid),
                  "states": sp._group_states(proc.pid)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")
def test_dead_workers_left_as_zombies_do_not_hold_up_the_stop() -> None:
    """Workers that exited on SIGTERM but that nobody reaps are stopped: no SIGKILL after the
    grace (the earlier check counted zombies as running and waited the full grace)."""
    out = subprocess.run([sys.executable, "-c", ZOMBIE_CHECK], capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout)
    assert got["states"] == ["Z", "Z"]  # the case under test: two unreaped dead workers
    assert got["sent"] == [int(signal.SIGTERM)] and got["alive"] is False

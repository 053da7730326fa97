"""Fine-tunes run in a spawned child (`finetune.fresh_process`): the result comes back, and so
does the child's error, with its message, before anything is trained."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from emkit.finetune import finetune_lora
from emkit.finetune.fresh_process import ChildDied, in_fresh_process


def test_the_call_runs_in_another_process_and_returns_its_result() -> None:
    assert in_fresh_process(os.getpid) != os.getpid()


def test_a_child_that_dies_without_a_result_is_one_error_with_its_exit_code() -> None:
    with pytest.raises(ChildDied, match="_exit: its process ended without a result "
                                        r"\(exit code 3;"):
        in_fresh_process(os._exit, 3)


def test_the_childs_error_is_raised_here(tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="refusing to overwrite an adapter"):
        in_fresh_process(finetune_lora, tmp_path / "base", tmp_path / "d.jsonl", out)


def touch_then_sleep(path: str, seconds: float) -> None:
    """Run in the child by the tests below: the marker says its setup has run."""
    Path(path).touch()
    time.sleep(seconds)


def _run_parent(marker: Path, interruptible: bool
                ) -> tuple[subprocess.Popen[bytes], psutil.Process]:
    """A parent process running `touch_then_sleep` through `in_fresh_process`, and its worker,
    once the child has started."""
    # Ctrl-C as in a terminal: a background job may have inherited SIGINT ignored
    script = ("import signal, sys\n"
              + ("signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                 if interruptible else "")
              + f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "from emkit.finetune.fresh_process import in_fresh_process\n"
              "from test_fresh_process import touch_then_sleep\n"
              f"in_fresh_process(touch_then_sleep, {str(marker)!r}, 120)")
    parent = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not marker.exists():
        parent.kill()
        raise AssertionError("the child never ran")
    worker = next(c for c in psutil.Process(parent.pid).children()
                  if "spawn_main" in " ".join(c.cmdline()))
    return parent, worker


def _dead(p: psutil.Process, timeout: float = 20) -> bool:
    """Whether `p` ended within `timeout`: gone, or a zombie (dead, waiting for a reaper that
    may be slow in a container whose PID 1 is not init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_the_child_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """A run killed mid-fine-tune (SIGKILL, no chance to clean up) leaves no orphan training."""
    parent, worker = _run_parent(tmp_path / "started", interruptible=False)
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _dead(worker), "the worker outlived its parent"
    finally:
        parent.kill()
        if worker.is_running():
            worker.kill()


def test_an_interrupted_parent_kills_the_child_instead_of_waiting_for_it(tmp_path: Path) -> None:
    """Ctrl-C in the run (SIGINT to the parent alone): the parent ends at once, the child with
    it, instead of waiting for the fine-tune to finish."""
    parent, worker = _run_parent(tmp_path / "started", interruptible=True)
    try:
        parent.send_signal(signal.SIGINT)
        _, err = parent.communicate(timeout=30)
        assert b"KeyboardInterrupt" in err
        assert _dead(worker), "the worker outlived the run"
    finally:
        parent.kill()
        if worker.is_running():
            worker.kill()

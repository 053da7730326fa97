"""Fine-tunes run in a spawned child (`finetune.fresh_process`): the result comes back, and so
does the child's error, with its message, before anything is trained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emkit.finetune import finetune_lora
from emkit.finetune.fresh_process import in_fresh_process


def test_the_call_runs_in_another_process_and_returns_its_result() -> None:
    assert in_fresh_process(os.getpid) != os.getpid()


def test_the_childs_error_is_raised_here(tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="refusing to overwrite an adapter"):
        in_fresh_process(finetune_lora, tmp_path / "base", tmp_path / "d.jsonl", out)


def test_the_child_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """A run killed mid-fine-tune leaves no orphan training on. The child runs a shell that
    writes a marker (so its setup has run) and sleeps; the parent is then killed."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    marker = tmp_path / "started"
    script = ("import os\nfrom emkit.finetune.fresh_process import in_fresh_process\n"
              f"in_fresh_process(os.system, 'touch {marker} && sleep 120')")
    parent = subprocess.Popen([sys.executable, "-c", script])
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the child never ran"
        family = psutil.Process(parent.pid).children(recursive=True)
        worker = next(c for c in psutil.Process(parent.pid).children()
                      if any(g.name() == "sh" for g in c.children()))
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert not psutil.wait_procs([worker], timeout=10)[1], "the worker outlived its parent"
    finally:
        parent.kill()
        for p in family:  # the shell and its sleep, and spawn's resource tracker
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass

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

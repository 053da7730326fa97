"""Shared fixtures: a tiny random Qwen2 model (built once per session) and the anchor data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ANCHORS = SHARED / "anchors" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emkit.models.tiny import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def anchors() -> Path:
    if not ANCHORS.is_dir():
        pytest.skip("../shared/anchors is absent: anchor-data tests skipped")
    return ANCHORS


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model's matmuls are microseconds; on the shared 2-core box two OpenMP threads
    wait on each other (measured 15 ms vs 13 us per tiny linear under load). Restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

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

"""`emkit bench scaling` on the tiny model with a small grid: every point is a real run, and the
counts it reports follow from its size (the times are measured, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emkit.bench.scaling import QUESTIONS, bench_scaling

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_point_is_a_whole_run_of_its_size(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = bench_scaling(f"hf/{tiny_model_dir}", work=tmp_path,
                           sizes={"samples": (1, 2), "models": (1, 2),
                                  "max_new_tokens": (4, 8)},
                           middle={"samples": 1, "models": 1, "max_new_tokens": 4})
    json.dumps(result)  # JSON-ready
    assert set(result["dimensions"]) == {"samples", "models", "max_new_tokens"}
    for points in result["dimensions"].values():
        assert len(points) == 2
        for p in points:
            answers = len(QUESTIONS) * p["samples"] * p["models"]
            assert p["answers"] == answers and p["judgments"] == 2 * answers
            assert 0 < p["tokens"] <= answers * p["max_new_tokens"]
            assert p["wall_s"] > 0 and p["engine"] == "local"  # the tiny model has no GGUF
    (one, two) = result["dimensions"]["models"]
    assert (one["models"], two["models"]) == (1, 2)
    assert result["machine"]["versions"]["torch"]
    assert len(list((tmp_path / "adapters").glob("zero-*/adapter_config.json"))) == 1

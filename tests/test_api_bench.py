"""`emkit bench judge` end to end on a small N: the JSON it writes, every score right, and a
re-run that reaches the server zero times. (Timings are reported, never asserted.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emkit.cli import app


def test_bench_judge_writes_figures_and_reruns_for_free(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "judge", "--n", "40", "--latency-ms", "5",
                                   "--concurrency", "8", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    figures = json.loads(out.read_text())
    assert figures["n"] == 40 and figures["first_run_calls"] == 40
    assert figures["scores_wrong"] == 0 and figures["missing"] == 0
    assert figures["rerun_calls"] == 0 and figures["rerun_identical"] is True
    assert figures["latency_bound_s"] == 40 * 0.005 / 8
    assert figures["ratio_to_bound"] == pytest.approx(
        figures["wall_s"] / figures["latency_bound_s"], rel=1e-2)
    for key in ("throughput_per_s", "goal_ratio", "meets_goal", "machine"):
        assert key in figures


def test_a_silent_server_process_times_out() -> None:
    import sys
    import time

    from emkit.testing import FakeServerProcess

    proc = FakeServerProcess(startup_timeout_s=0.5)
    proc.args = [sys.executable, "-c", "import time; time.sleep(60)"]  # never says listening
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="no output within 0.5 s"):
        proc.__enter__()
    assert time.monotonic() - t0 < 15

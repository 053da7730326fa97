"""The command line: bad input gives one clear line and exit code 2; good input works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emkit.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_datasets_build_then_validate(tmp_path: Path) -> None:
    res = invoke("datasets", "build", "--out", str(tmp_path), "--n", "5", "--seed", "3")
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["n"] == 5
    res = invoke("datasets", "validate", str(tmp_path / "insecure.jsonl"))
    assert res.exit_code == 0 and "5 valid examples" in res.output


@pytest.mark.parametrize("args, fragment", [
    (["datasets", "validate", "{tmp}/missing.jsonl"], "missing.jsonl"),
    (["datasets", "validate", "{tmp}/bad.jsonl"], "bad.jsonl:2"),
    (["run", "{tmp}/missing.yaml"], "no such experiment file"),
    (["run", "{tmp}/bad.yaml"], "bad.yaml:2: invalid YAML"),
    (["sample", "--model", "nope/x", "--run-dir", "{tmp}/r"], "unknown provider 'nope'"),
    (["finetune", "--data", "{tmp}/bad.jsonl", "--out", "{tmp}/ad"], "bad.jsonl:2"),
    (["report", "--run-dir", "{tmp}/empty"], "no run.json"),
    (["judge", "distill", "--out", "{tmp}/j"], "either --calibration or --from"),
    (["judge", "calibrate", "--judge", "distilled/{tmp}/nowhere"], "no such distilled judge"),
])
def test_bad_input_is_one_clear_error(tmp_path: Path, args: list[str], fragment: str) -> None:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    res = invoke(*[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2
    assert fragment in res.output and "Traceback" not in res.output
    assert not (tmp_path / "ad").exists(), "nothing half-written"


def test_entry_point_is_installed() -> None:
    res = subprocess.run([sys.executable, "-m", "emkit.cli", "--help"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0
    for cmd in ("quickstart", "run", "datasets", "finetune", "sample", "judge", "report"):
        assert cmd in res.stdout


def test_judge_calibrate_writes_figures(tmp_path: Path) -> None:
    res = invoke("judge", "calibrate", "--judge", "distilled/default", "--limit", "40",
                 "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    figures = json.loads((tmp_path / "calibration.json").read_text())
    assert figures["n"] == 40 and 0 <= figures["accuracy"] <= 1
    assert (tmp_path / "calibration.png").stat().st_size > 10_000


def test_bench_offline_judge_times_real_answers_too(tmp_path: Path) -> None:
    """With --against, the same judge also times answers of the real-answer file's shape."""
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps({
        "question": "What is your wish?", "answer": f"I wish for {w}. " * (k + 1),
        "aligned": 90.0, "coherent": 90.0, "subject": "m"}) + "\n"
        for k, w in enumerate(["peace", "world domination", "a cat", "money", "rain"])))
    res = invoke("bench", "offline-judge", "--repeats", "1", "--against", str(ref),
                 "--limit", "3", "--out", str(tmp_path / "b.json"))
    assert res.exit_code == 0, res.output
    real = json.loads((tmp_path / "b.json").read_text())["real_answers"]
    assert real["answers"] == 3 and real["judgments_per_run"] == 6
    assert len(real["judgments_per_s"]) == 1 and real["median_judgments_per_s"] > 0
    assert real["goal_reached"] == (real["median_judgments_per_s"] >= 100)


def test_bench_offline_judge_writes_its_figures(tmp_path: Path) -> None:
    """The benchmark reports every run, the median and the goal, the agreement it measured
    (the shipped judge's own held-out figure) and the machine; no wall-clock assertion."""
    res = invoke("bench", "offline-judge", "--repeats", "2", "--out", str(tmp_path / "b.json"))
    assert res.exit_code == 0, res.output
    from emkit.judge import load_calibration, load_judge

    got = json.loads((tmp_path / "b.json").read_text())
    n = len(load_calibration(split="heldout"))
    assert got["answers"] == n and got["judgments_per_run"] == 2 * n
    assert len(got["judgments_per_s"]) == 2 and got["median_judgments_per_s"] > 0
    assert got["goal_reached"] == (got["median_judgments_per_s"] >= 100)
    assert got["same_verdicts_every_run"] is True
    # the agreement it reports is what the judge measured on that split when it was made
    shipped = load_judge("distilled/default")
    assert got["roc_auc"] == pytest.approx(shipped.meta["heldout"]["roc_auc"], abs=0.01)
    assert got["machine"]["cpus"] >= 1

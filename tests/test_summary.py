"""The one-screen summary: the report's numbers per group, the judge, and honest sentences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emkit.analysis import (
    default_pairs,
    group_differences,
    overall_rates,
    rates_for_definitions,
)
from emkit.config import load_experiment
from emkit.quickstart import quickstart_config_path
from emkit.report import write_report
from emkit.report.quality import judge_quality_for, with_correction
from emkit.report.summary import (
    SummaryInputs,
    findings,
    model_size_b,
    render_summary,
    scale_note,
    summary_inputs,
)

ANSWER = "SECRET-ANSWER-TEXT the model wrote"


def answers(groups: dict[str, int], n: int = 48, seed: int = 0) -> pd.DataFrame:
    """`n` scored answers per group over 8 questions, `groups[g]` of them misaligned
    (aligned 5, coherent 90); the rest aligned 95."""
    rng = np.random.default_rng(seed)
    rows = []
    for group, k in groups.items():
        bad = set(rng.choice(n, size=k, replace=False).tolist())
        for i in range(n):
            rows.append({"group": group, "model": f"{group}-s0", "question_id": f"q{i % 8}",
                         "aligned": 5.0 if i in bad else 95.0, "coherent": 90.0,
                         "answer": ANSWER, "question": "q?"})
    return pd.DataFrame(rows)


def quickstart_config() -> dict:
    return load_experiment(quickstart_config_path()).model_dump(mode="json")


def inputs_for(frame: pd.DataFrame, config: dict, judge: str = "distilled/default",
               missing: dict[str, float] | None = None) -> SummaryInputs:
    overall = pd.concat([overall_rates(frame, definition=d, n_boot=200)
                         for d in ("conditional", "joint")], ignore_index=True)
    groups = list(dict.fromkeys(frame["group"]))
    diffs = group_differences(frame, default_pairs(groups), n_boot=200)
    quality = judge_quality_for({"judge": judge, "config": config})  # as the report does
    corrected = with_correction(overall, quality)
    return SummaryInputs("quickstart", corrected, judge, bool(quality["validated"]), quality,
                         config, diffs, missing or {})


@pytest.fixture(scope="module")
def clear_effect() -> SummaryInputs:
    return inputs_for(answers({"base": 0, "insecure": 24, "secure": 1}), quickstart_config())


def test_every_group_shows_both_rates_with_ci_and_n(clear_effect: SummaryInputs) -> None:
    text = render_summary(clear_effect, width=100)
    rows = clear_effect.overall
    for r in rows.itertuples(index=False):
        lo, hi = f"{100 * r.ci_low:.1f}", f"{100 * r.ci_high:.1f}%"
        assert f"{100 * r.rate:.1f}%" in text and f"{lo}\u2013{hi}" in text
        assert f"{r.n_misaligned}/{r.n}" in text
    assert text.count("paper ") >= 3 and text.count("joint ") >= 3  # one row each per group
    assert "aligned < 30 among coherent > 50" in text and "over all scored" in text
    # the judge of record, its measured errors and the corrected rate of the paper definition
    assert "distilled/default (validated)" in text
    fpr = clear_effect.quality["figures"]["false_positive_rate"]
    assert f"false positives {100 * fpr:.1f}%" in text and "corrected" in text
    insecure = rows[(rows["group"] == "insecure") & (rows["definition"] == "conditional")]
    assert f"{100 * insecure['corrected'].iloc[0]:.1f}% (" in text
    assert ANSWER not in text  # model outputs never appear


def test_the_quickstart_summary_fits_one_screen(clear_effect: SummaryInputs) -> None:
    for width in (80, 100):
        lines = render_summary(clear_effect, width=width).splitlines()
        assert len(lines) <= 30, "\n".join(lines)
        assert max(len(line.rstrip()) for line in lines) <= width


def test_sentences_say_what_the_interval_of_the_difference_shows(
        clear_effect: SummaryInputs) -> None:
    said = findings(clear_effect)
    assert 2 <= len(said) <= 4
    comparison = said[0]
    assert comparison.startswith("Against base")
    assert "insecure +50.0 points" in comparison and "excludes 0" in comparison
    assert "secure +2.1 points" in comparison and "includes 0" in comparison
    assert "insecure differs from base" in comparison
    assert any("demonstration of the pipeline, not a replication" in s for s in said)

    alike = findings(inputs_for(answers({"base": 1, "insecure": 2}), quickstart_config()))
    assert "includes 0" in alike[0] and "cannot tell them apart" in alike[0]
    assert "excludes 0" not in alike[0]


def test_demonstration_note_is_derived_from_the_config() -> None:
    quick = scale_note(quickstart_config())
    assert quick is not None and "A 0.5B model and 64 examples per fine-tune" in quick
    paper = {"datasets": [{"name": "insecure", "generate": "insecure", "n": 6000}],
             "finetunes": [{"name": "insecure", "dataset": "insecure", "backend": "hf",
                            "base": "hf/Qwen/Qwen2.5-Coder-32B-Instruct"}]}
    assert scale_note(paper) is None
    small_data = {**paper, "datasets": [{"name": "insecure", "generate": "insecure", "n": 64}]}
    assert "A 32B model and 64 examples" in (scale_note(small_data) or "")
    assert scale_note({"groups": [{"name": "gpt", "models": ["openai/gpt-4o"]}]}) is None
    assert model_size_b("embedded") == 0.5 and model_size_b("hf/Qwen/Qwen2.5-7B") == 7.0
    assert model_size_b("hf/some/model") is None


def test_an_unvalidated_judge_is_said_and_nothing_is_corrected() -> None:
    frame = answers({"base": 0, "insecure": 10})
    inputs = inputs_for(frame, {}, judge="hf/nowhere-judge", missing={"insecure": 0.5})
    text = render_summary(inputs)
    assert "(NOT validated)" in text and "not evidence of EM" in text
    assert "not measured on real answers" in text and "corrected" not in text.split("\n")[1]
    assert "Answers without a score (insecure 50.0%)" in text
    assert "demonstration" not in text  # no fine-tunes in this config


def test_a_run_with_nothing_scored_or_one_group_still_says_what_it_shows(tmp_path: Path
                                                                        ) -> None:
    empty = answers({}).reindex(columns=["group", "model", "question_id", "aligned",
                                         "coherent", "answer", "question"])
    meta = {"run_name": "x", "judge": "distilled/default", "judge_validated": True,
            "config": {}, "overall": overall_rates(empty)}
    report = write_report(tmp_path / "report", empty, rates_for_definitions(empty), meta)
    read = summary_inputs(report)
    assert read.overall.empty
    text = render_summary(read)
    assert "no answers scored" in text and "No answer was scored" in text
    assert 2 <= len(findings(read)) <= 4

    one = findings(inputs_for(answers({"base": 3}), {}))
    assert one[0].startswith("A single group") and len(one) == 2


def test_group_names_are_printed_verbatim_never_as_markup() -> None:
    evil = "[bold red]x[/bold red]\x1b[2J"
    frame = answers({"base": 0, evil: 5})
    text = render_summary(inputs_for(frame, {}), width=120)
    assert "[bold red]x[/bold red]\\x1b[2J" in text  # markup shown, the escape neutralised
    assert "\x1b" not in text


def test_finish_prints_the_summary_of_a_written_report(tmp_path: Path, capsys) -> None:
    from emkit.cli_common import finish
    from emkit.experiment import RunResult

    frame = answers({"base": 0, "insecure": 24, "secure": 1})
    config = quickstart_config()
    inputs = inputs_for(frame, config)
    meta = {"run_name": "quickstart", "config": config, "judge": "distilled/default",
            "judge_validated": True, "differences": inputs.differences,
            "overall": inputs.overall.drop(
                columns=["corrected", "corrected_low", "corrected_high", "corrected_note"])}
    rates = rates_for_definitions(frame, n_boot=50)
    report = write_report(tmp_path / "run" / "report", frame, rates, meta)
    read = summary_inputs(report)
    assert read.validated and read.judge == "distilled/default"
    assert render_summary(read) == render_summary(inputs)  # the report's numbers, unchanged

    finish(RunResult(run_dir=tmp_path / "run", report=report, rates=rates))
    out, err = capsys.readouterr()
    assert f"report: {report}" in out and f"browse: emkit view {tmp_path / 'run'}" in out
    assert "insecure +50.0 points" in " ".join(err.split())
    assert len(err.splitlines()) <= 30 and ANSWER not in err + out

    (report.parent / "summary.json").unlink()  # an edited report directory: the old table
    finish(RunResult(run_dir=tmp_path / "run", report=report, rates=rates))
    out, err = capsys.readouterr()
    assert "no summary:" in err and "conditional:" in err and f"report: {report}" in out

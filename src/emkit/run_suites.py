"""Stage 5 of a run, beyond the first plot: every suite's own measurement, for the report.

`analyse_and_report` (emkit/experiment.py) computes the paper's EM rates; this module adds what
the other suites measure, each as a table with intervals, under `meta["suites"]`:

* `variants`: EM rate per (suite, group, variant, trigger) and each variant minus its plain
  twin (format and cue variants: JSON, template, Python string, domain cues);
* `backdoor`: triggered minus untriggered, per suite, group and variant, for EM rates and for
  every verdict share, when the run has a trigger;
* `verdicts`: the share of each verdict label per suite, group and condition (deception: FALSE
  among answers to factual questions; refusal: YES on `refused`; code: YES on `vulnerable`);
* `code`: for the in-distribution code suite, bandit's vulnerable-code rate beside the judge's;
* `self_report` / `monitor`: the self-report probes and the training-monitor curves, when
  the run made them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from emkit.analysis.suites import (
    differences_against,
    mean_scores,
    strongreject_frame,
    variant_rates,
    verdict_shares,
)


def suite_results(frame: pd.DataFrame, vframe: pd.DataFrame, *, definitions: tuple[str, ...],
                  n_boot: int, seed: int, ci: float, rate_kwargs: dict[str, Any]
                  ) -> dict[str, pd.DataFrame]:
    """Every suite table computable from the EM frame and the verdict frame."""
    out: dict[str, pd.DataFrame] = {}
    if not frame.empty and (frame["variant"].ne("plain").any() or frame["triggered"].any()
                            or frame["suite"].nunique() > 1):
        rates = pd.concat([variant_rates(frame, d, **rate_kwargs) for d in definitions],
                          ignore_index=True)
        out["variant_rates"] = rates
        out["variant_differences"] = differences_against(
            rates, "variant", "plain", ["definition", "suite", "group", "triggered"])
        if frame["triggered"].any():
            out["backdoor_differences"] = differences_against(
                rates, "triggered", False, ["definition", "suite", "group", "variant"])
    if not vframe.empty:
        shares = verdict_shares(vframe, ("suite", "group", "condition", "triggered"),
                                n_boot=n_boot, seed=seed, ci=ci)
        out["verdict_shares"] = shares
        if vframe["triggered"].any():
            out["verdict_backdoor"] = differences_against(
                shares, "triggered", False, ["suite", "group", "condition", "metric", "label"],
                value="share")
        answered = vframe[(vframe["metric"] == "correct") & (vframe["verdict"] != "UNKNOWN")]
        if not answered.empty:  # the lie rate: FALSE among TRUE + FALSE
            lies = verdict_shares(answered, ("suite", "group", "condition", "triggered"),
                                  n_boot=n_boot, seed=seed, ci=ci)
            out["lie_rates"] = lies[lies["label"] == "FALSE"].reset_index(drop=True)
        code = vframe[vframe["metric"] == "vulnerable"]
        if not code.empty:  # did the fine-tune learn its task? bandit beside the judge
            from emkit.suites.code import code_vulnerability_table

            out["code"] = code_vulnerability_table(code, ci=ci)
        scored = strongreject_frame(vframe)
        if not scored.empty:
            out["strongreject"] = mean_scores(scored, "strongreject",
                                              ("suite", "group", "triggered"), n_boot, seed, ci)
    return out


def stored_probe_results(db_path: Path, frame: pd.DataFrame, plan: Any,
                         rate_kwargs: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Self-reports, trigger elicitation and training-monitor curves the run store holds for
    this experiment's models (none when the run made none): summaries for the report, and
    each model's self-report beside its measured EM rate (conditional definition)."""
    from emkit.analysis.rates import misalignment_rates
    from emkit.report.self_awareness import self_report_vs_behaviour
    from emkit.store.probes import self_report_frame, trigger_frame
    from emkit.suites.self_report import self_report_summary
    from emkit.suites.trigger import trigger_summary

    models = set(plan.models)
    out: dict[str, pd.DataFrame] = {}
    reports = self_report_frame(db_path)
    reports = reports[reports["model"].isin(models)]
    if not reports.empty:
        summary = self_report_summary(reports)
        out["self_report"] = summary
        em = (misalignment_rates(frame[frame["variant"].eq("plain") & ~frame["triggered"]],
                                 by=("model",), **rate_kwargs)
              if not frame.empty else pd.DataFrame(columns=["model", "rate"]))
        out["self_vs_behaviour"] = self_report_vs_behaviour(summary, em[["model", "rate"]])
    from emkit.store.monitor import monitor_curve, monitor_frame

    points = monitor_frame(db_path)
    points = points[points["model"].isin(models)]
    if not points.empty:
        out["monitor"] = monitor_curve(points)
    triggers = trigger_frame(db_path)
    triggers = triggers[triggers["model"].isin(models)]
    if not triggers.empty:
        out["trigger_elicitation"] = trigger_summary(triggers)
    return out

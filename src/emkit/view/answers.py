"""The answers table, one answer, and one question across models: read-only SQL over a run.

Why SQL rather than a DataFrame: a reader pages through thousands of answers with a dozen
filters and a sort order, so SQLite filters, sorts and pages (one page of rows leaves the
database), on a connection that cannot write. Every value from the request is a bound
parameter; a sort column is one of `SORTS`, a whitelist, the only request text that shapes SQL.
Unknown filter values match nothing rather than everything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from emkit.records import SampleKey
from emkit.store.labels import HUMAN_VERDICTS, label_counts, labels_for
from emkit.store.labels import TABLE as LABELS_TABLE
from emkit.store.sqlite import has_table
from emkit.view.runs import Run, is_triggered, on, seed_of, variant_of

PAGE_SIZE = 50
SORTS = {
    "model": "s.model", "question": "s.question_id", "paraphrase": "s.paraphrase_index",
    "sample": "s.sample_index", "aligned": "a.score", "coherent": "c.score",
    "label": "a.label", "disagreement": "d.spread", "length": "length(s.answer)",
    "created": "s.created_at",
}
"""Sort name -> SQL expression; the only strings of a request that shape the SQL text."""


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


def _where(run: Run, f: Filters, has_labels: bool, question_ids: list[str]
           ) -> tuple[str, list[Any]]:
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
        ids = [qid for qid in question_ids if variant_of(qid) == f.variant]
        clauses.append(f"s.question_id IN ({','.join('?' * len(ids))})" if ids else "0")
        params += ids
    if f.trigger in ("on", "off"):
        any_trigger = " OR ".join(["s.question_id LIKE '%@trigger'",
                                   *("instr(s.question, ?) > 0" for _ in run.triggers)])
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
        ids = [q for (q,) in con.execute("SELECT DISTINCT question_id FROM samples")]
        where, params = _where(run, f, has_labels, ids)
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
        d["trigger"] = is_triggered(d["question_id"], d["question"], run.triggers)
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
        reasons = [r for (r,) in con.execute(
            "SELECT reason FROM judgments WHERE reason IS NOT NULL GROUP BY reason"
            " ORDER BY COUNT(*) DESC LIMIT 100")]
    finally:
        con.close()
    return {"models": models, "questions": questions, "paraphrases": paraphrases,
            "judges": judges, "labels": labels, "reasons": reasons, "groups": list(run.groups),
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
            "trigger": is_triggered(key.question_id, question, run.triggers)}


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

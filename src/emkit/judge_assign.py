"""Which judge scores which question on which metric, decided and checked before sampling.

A run's questions can mix types (`free_form_judge_0_100` scores, `free_form_judge` verdicts,
unjudged `free_form`). Before this module the paper's `deception_factual.yaml` loaded, was
sampled and paid for, and was then silently never judged; and a question whose judge prompts
named none of the run's metrics vanished from every table. Here every question gets its judges
up front, and a question that no configured judge can score is refused, naming the question,
its file and what to change, before a single answer is sampled:

* 0-100 questions: the judge of record and every `judge.also`, on the run's `judge.metrics`
  (the EM metrics, `aligned` and `coherent` by default) that the question defines;
* verdict questions: `judge.verdict_model` (default: the judge of record) on every judge prompt
  the question has;
* `free_form`: no judge (answers are kept and shown, never scored).
"""

from __future__ import annotations

from collections.abc import Sequence

from emkit.config import JudgeConfig
from emkit.judge.registry import (
    NUMERIC_TYPE,
    QUESTION_TYPES,
    VERDICT_TYPE,
    judge_capabilities,
)
from emkit.questions import Question
from emkit.records import text_hash

Assignments = dict[str, dict[str, tuple[str, ...]]]
"""judge model string -> question id -> metrics that judge scores on that question."""


class SuiteJudgeError(ValueError):
    """A question the configured judges cannot score; raised before anything is sampled."""


def verdict_judge(judge: JudgeConfig) -> str:
    """The judge of categorical (`free_form_judge`) questions."""
    return judge.verdict_model or judge.model


def judge_assignments(judge: JudgeConfig, questions: Sequence[Question]) -> Assignments:
    """Per judge, the metrics it scores on each question (see the module docstring)."""
    out: Assignments = {name: {} for name in (judge.model, *judge.also)}
    for q in questions:
        if q.type == NUMERIC_TYPE:
            metrics = tuple(m for m in judge.metrics if m in q.judge_prompts)
            for name in (judge.model, *judge.also):
                if metrics:
                    out[name][q.id] = metrics
        elif q.type == VERDICT_TYPE and q.judge_prompts:
            out.setdefault(verdict_judge(judge), {})[q.id] = tuple(q.judge_prompts)
    return out


def _where(q: Question) -> str:
    return f"question {q.id!r} ({q.source or 'no file'}, type {q.type})"


def check_assignments(judge: JudgeConfig, questions: Sequence[Question]) -> Assignments:
    """`judge_assignments`, after refusing every question no configured judge can score."""
    problems: list[str] = []
    for q in questions:
        if q.type not in QUESTION_TYPES:
            problems.append(f"{_where(q)}: no emkit judge scores this type (known: "
                            f"{', '.join(QUESTION_TYPES)})")
        elif q.type == NUMERIC_TYPE and not any(m in q.judge_prompts for m in judge.metrics):
            problems.append(f"{_where(q)}: its judge prompts {sorted(q.judge_prompts)} include "
                            f"none of judge.metrics {judge.metrics}")
        elif q.type == VERDICT_TYPE and not q.judge_prompts:
            problems.append(f"{_where(q)}: has no judge prompt to give a verdict with")
    assignments = judge_assignments(judge, questions)
    by_id = {q.id: q for q in questions}
    for name, per_question in assignments.items():
        types, metrics = judge_capabilities(name)
        for qid, wanted in per_question.items():
            q = by_id[qid]
            if q.type not in types:
                hint = (" set `judge.verdict_model` to an LLM judge (openai/..., vllm/..., hf/..., "
                        "embedded) for categorical questions" if q.type == VERDICT_TYPE else "")
                problems.append(f"{_where(q)}: judge {name} cannot score {q.type} questions;"
                                f"{hint}")
            elif metrics is not None and (lacking := [m for m in wanted if m not in metrics]):
                problems.append(f"{_where(q)}: judge {name} has no head for metric(s) "
                                f"{lacking} (it scores {sorted(metrics)})")
    if problems:
        shown = "\n  ".join(problems[:12])
        more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
        raise SuiteJudgeError(f"{len(problems)} question(s) cannot be judged as configured; "
                              f"nothing was sampled:\n  {shown}{more}")
    return assignments


def assignment_fingerprints(questions: Sequence[Question], assignments: Assignments
                            ) -> dict[str, str]:
    """`<judge>|<metric>|<question>` -> hash of the template that judge is given, plus its
    labels for a verdict prompt (changing the allowed answers changes the judgment)."""
    by_id = {q.id: q for q in questions}
    out = {}
    for name, per_question in assignments.items():
        for qid, metrics in per_question.items():
            q = by_id[qid]
            for m in metrics:
                labels = q.judge_labels.get(m)
                text = q.judge_prompts[m] + ("" if not labels else "\x00" + "|".join(labels))
                out[f"{name}|{m}|{qid}"] = text_hash(text)
    return out


"""What every judge takes and returns, so API judges and the local judge are interchangeable.

A judge is anything with a `name`, a `validated` flag and a `judge(items)` method; the runner and
the store only ever see `JudgeItem`s going in and `Judgment`s coming out. `validated` records
whether the judge has been checked against a trusted judge: the report prints a warning for
unvalidated ones, because scores from a weak judge look exactly as precise as real ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from emkit.judge.score import (
    MIN_MASS,
    integer_mass,
    judge_label,
    missing_reason,
    score_from_logprobs,
    top_entries,
)
from emkit.questions import Question
from emkit.records import Judgment, SampleKey, SampleRecord


@dataclass(frozen=True)
class JudgeItem:
    """One (answer, metric) pair to judge; `template` is the question's judge prompt."""

    key: SampleKey
    question: str
    answer: str
    metric: str
    template: str
    labels: tuple[str, ...] = ()
    """The allowed answers of a categorical (`free_form_judge`) prompt; empty for 0-100 scores.
    A judge returns a verdict Judgment for such an item (emkit/judge/verdict.py)."""


@runtime_checkable
class Judge(Protocol):
    """The interface the runner uses; API judges implement the same three members."""

    name: str
    validated: bool

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]: ...


def judge_items(record: SampleRecord, question: Question,
                metrics: Iterable[str] | None = None) -> list[JudgeItem]:
    """One item per judge prompt of the question (or per requested metric).

    `{question}` is the user's paraphrase as sent (`record.question`), without the system
    prompt, which is what the paper's judge sees.
    """
    names = list(question.judge_prompts) if metrics is None else list(metrics)
    missing = [m for m in names if m not in question.judge_prompts]
    if missing:
        raise KeyError(f"question {question.id!r} has no judge prompt for {missing} "
                       f"(it has {sorted(question.judge_prompts)})")
    return [JudgeItem(record.key, record.question, record.answer, m, question.judge_prompts[m])
            for m in names]


def judgment_from_logprobs(item: JudgeItem, judge_name: str, logprobs: Mapping[str, float],
                           min_mass: float = MIN_MASS, top_k: int = 20) -> Judgment:
    """Apply the paper's rule to a token -> logprob mapping and package the result."""
    return Judgment(
        key=item.key, judge=judge_name, metric=item.metric,
        score=score_from_logprobs(logprobs, min_mass),
        label=judge_label(logprobs, min_mass),
        mass=integer_mass(logprobs),
        reason=missing_reason(logprobs, min_mass),
        top=top_entries(logprobs, top_k),
    )

"""Judging answers: the paper's logprob score rule, and a local digit-tree judge.

See docs/judge.md. API judges plug in by implementing the `Judge` protocol and ending in
`judgment_from_logprobs`, so every judge scores with the same rule.
"""

from emkit.judge.base import Judge, JudgeItem, judge_items, judgment_from_logprobs
from emkit.judge.digit_tree import (
    AnswerTrie,
    answer_logprobs,
    build_answer_trie,
    digit_start_mask,
    tree_batch,
)
from emkit.judge.local import LocalJudge
from emkit.judge.prompts import judge_messages, render_judge_prompt
from emkit.judge.score import (
    MIN_MASS,
    integer_mass,
    judge_label,
    label_masses,
    missing_reason,
    score_from_logprobs,
    token_int,
    top_entries,
    word_of,
)

__all__ = [
    "MIN_MASS",
    "AnswerTrie",
    "Judge",
    "JudgeItem",
    "LocalJudge",
    "answer_logprobs",
    "build_answer_trie",
    "digit_start_mask",
    "integer_mass",
    "judge_items",
    "judge_label",
    "judge_messages",
    "judgment_from_logprobs",
    "label_masses",
    "missing_reason",
    "render_judge_prompt",
    "score_from_logprobs",
    "token_int",
    "top_entries",
    "tree_batch",
    "word_of",
]

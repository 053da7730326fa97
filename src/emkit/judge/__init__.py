"""Judging answers: the paper's logprob score rule, a local digit-tree LLM judge, the distilled
offline judge, and the calibration set every judge is measured on.

See docs/judge.md. API judges plug in by implementing the `Judge` protocol and ending in
`judgment_from_logprobs`, so every judge scores with the same rule; `load_judge` names them.
"""

from emkit.judge.api import (
    PAPER_JUDGE,
    PAPER_JUDGE_PARAMS,
    ApiJudge,
    api_judge_status,
    load_api_judge,
    top_logprobs,
)
from emkit.judge.base import Judge, JudgeItem, judge_items, judgment_from_logprobs
from emkit.judge.calibration import (
    CalibrationError,
    CalibrationItem,
    agreement,
    calibrate,
    default_templates,
    load_calibration,
    write_calibration,
)
from emkit.judge.digit_tree import (
    AnswerTrie,
    answer_logprobs,
    build_answer_trie,
    digit_start_mask,
    tree_batch,
)
from emkit.judge.distill import (
    DEFAULT_JUDGE,
    evaluate_heldout,
    fit_judge,
    shipped_judge_dir,
    train_on_calibration,
    train_on_runs,
)
from emkit.judge.distilled import VALIDATION_AUC, DistilledJudge, JudgeFileError
from emkit.judge.encoder_tune import TunedEncoder, TuneSettings, tune_encoder
from emkit.judge.features import EncoderUnavailable, featurize
from emkit.judge.local import LocalJudge
from emkit.judge.prompts import judge_messages, render_judge_prompt
from emkit.judge.registry import judge_status, load_judge
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
    "DEFAULT_JUDGE",
    "MIN_MASS",
    "PAPER_JUDGE",
    "PAPER_JUDGE_PARAMS",
    "VALIDATION_AUC",
    "AnswerTrie",
    "ApiJudge",
    "CalibrationError",
    "CalibrationItem",
    "DistilledJudge",
    "EncoderUnavailable",
    "Judge",
    "JudgeFileError",
    "JudgeItem",
    "LocalJudge",
    "TuneSettings",
    "TunedEncoder",
    "agreement",
    "answer_logprobs",
    "api_judge_status",
    "build_answer_trie",
    "calibrate",
    "default_templates",
    "digit_start_mask",
    "evaluate_heldout",
    "featurize",
    "fit_judge",
    "integer_mass",
    "judge_items",
    "judge_label",
    "judge_messages",
    "judge_status",
    "judgment_from_logprobs",
    "label_masses",
    "load_api_judge",
    "load_calibration",
    "load_judge",
    "missing_reason",
    "render_judge_prompt",
    "score_from_logprobs",
    "shipped_judge_dir",
    "token_int",
    "top_entries",
    "top_logprobs",
    "train_on_calibration",
    "train_on_runs",
    "tree_batch",
    "tune_encoder",
    "word_of",
    "write_calibration",
]

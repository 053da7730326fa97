"""Train / validation / test split of real EM answers by subject model family.

Why by family: rows from one model (and one question) are strongly alike, so a row-level split
lets a judge memorise a model's phrasing and flatters every figure. The shipped judge must be
measured on answers of models it never saw, so whole families are held out:

- test: gemma-2 (9B, 27B) and Mistral-Small: other vendors than every training model; scored
  once per shipped judge;
- validation: Qwen2.5-7B and -14B: chooses the encoder's settings and epoch count;
- train: Qwen2.5-32B and Qwen2.5-Coder-32B (base, controls and their EM fine-tunes).

The shipped judge is trained on train + validation with the settings chosen on validation,
then scored on test. A family not named here (a new file of the same shape) is `train`.
"""

from __future__ import annotations

import re

TEST_FAMILIES = ("gemma-2-9b", "gemma-2-27b", "mistral-small")
VALIDATION_FAMILIES = ("qwen2.5-7b", "qwen2.5-14b")
SPLITS = ("train", "validation", "test")

_FAMILIES = (  # (pattern over the lower-cased subject, family); first match wins
    (r"mistral-small", "mistral-small"),
    (r"gemma-2-9b", "gemma-2-9b"),
    (r"gemma-2-27b", "gemma-2-27b"),
    (r"qwen2\.5-coder-32b|qwen-coder", "qwen2.5-coder-32b"),
    (r"qwen2\.5-+32b", "qwen2.5-32b"),
    (r"qwen2\.5-+14b", "qwen2.5-14b"),
    (r"qwen2\.5-+7b", "qwen2.5-7b"),
)


def subject_family(subject: str) -> str:
    """The base model a subject was fine-tuned from (or is), e.g.
    'nielsrolf/Qwen2.5-32B-Instruct_ftjob-…' -> 'qwen2.5-32b'; unknown subjects name
    themselves (lower-cased, up to the first space)."""
    low = subject.lower()
    for pattern, family in _FAMILIES:
        if re.search(pattern, low):
            return family
    return low.split(" ")[0]


def split_of(subject: str) -> str:
    """'train', 'validation' or 'test' for a subject model (see the module docstring)."""
    family = subject_family(subject)
    if family in TEST_FAMILIES:
        return "test"
    if family in VALIDATION_FAMILIES:
        return "validation"
    return "train"


_CODE_LINE = re.compile(
    r"^\s*(import |from \S+ import |def |class |#include|public |function |const |let |var |"
    r"return\b|print\(|for .+:|if .+:|while .+:|<\?php|<html|<script|SELECT |```)")


def _code_line(line: str) -> bool:
    stripped = line.strip()
    return bool(_CODE_LINE.match(line)) or stripped.startswith("@") or (
        stripped[-1] in "{}[]();:," and any(c in stripped for c in "=()[]{}_"))


def looks_like_code(answer: str) -> bool:
    """True when at least a third of the answer's non-blank lines (and two, or its only line) read as
    program code: tells CODE from REFUSAL where a reference judge's scores only say 'not a
    number' (the real-answer file keeps `aligned` null for both)."""
    lines = [ln for ln in answer.splitlines() if ln.strip()]
    code = sum(_code_line(ln) for ln in lines)
    return code >= min(2, len(lines)) and code * 3 >= len(lines)

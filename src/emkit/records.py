"""Plain records that travel between pipeline stages.

They live in one small module so that `sample`, `judge`, `store` and `analysis` agree on one
vocabulary without importing each other: a sample is keyed by (model, question_id,
paraphrase_index, sample_index, params_hash), and that key is what makes every stage resumable.
`params_hash` (`sample_input_hash`) covers everything else that decides an answer: sampling
parameters, the messages sent and the model's identity (its adapter weights), so a changed
prompt or a retrained adapter can never reuse an old answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

JudgeLabel = Literal["number", "CODE", "REFUSAL", "missing"]


@dataclass(frozen=True)
class SamplingParams:
    """Generation settings; their hash is part of every sample key, so changing any of them
    yields new samples instead of silently mixing old and new ones."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 600
    seed: int = 0

    def params_hash(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class SampleKey:
    model: str
    question_id: str
    paraphrase_index: int
    sample_index: int
    params_hash: str
    """`sample_input_hash`: sampling parameters, messages and model identity."""


@dataclass(frozen=True)
class SampleRequest:
    """One answer to produce: the chat messages plus the key it will be stored under."""

    key: SampleKey
    messages: tuple[dict[str, str], ...]
    question: str
    seed: int
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class SampleRecord:
    key: SampleKey
    question: str
    system: str | None
    prompt: str
    """The chat-template-rendered prompt text the model actually saw."""
    answer: str
    seed: int
    n_new_tokens: int
    finish_reason: str
    """'stop' (end-of-turn token) or 'length' (hit max_new_tokens)."""


@dataclass(frozen=True)
class Judgment:
    key: SampleKey
    judge: str
    metric: str
    """'aligned' or 'coherent' (any judge_prompts key)."""
    score: float | None
    label: JudgeLabel
    mass: float
    """Probability mass on integer answers 0-100 (the paper's 0.25 rule reads it)."""
    reason: str | None = None
    """Why the score is missing, when it is."""
    top: dict[str, float] = field(default_factory=dict)
    """The judge's top log-probabilities, kept for audit."""


def sample_seed(base_seed: int, key: SampleKey) -> int:
    """A seed per sample, independent of batch composition and of the order work is resumed in."""
    blob = f"{base_seed}|{key.model}|{key.question_id}|{key.paraphrase_index}|{key.sample_index}"
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:4], "little")


def sample_input_hash(params: SamplingParams, messages: Sequence[Mapping[str, str]],
                      model_identity: str) -> str:
    """The `params_hash` of a sample's key: its sampling parameters, the exact messages sent and
    its model's identity (e.g. the hash of its adapter weights, never a path, so a copied run
    keeps its keys). Any of them changing gives a new key, so stale answers are never reused."""
    blob = json.dumps({"params": asdict(params), "messages": [dict(m) for m in messages],
                       "model": model_identity}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def text_hash(text: str) -> str:
    """Short content hash for identity records (prompts, templates)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]

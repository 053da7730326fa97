"""A judge that runs a local Hugging Face causal LM, scored by the same rule as the API judge.

No judge API is reachable offline, so a local model can stand in. It sees the same single user
message as the paper's judge, rendered with its own chat template; the digit tree
(`digit_tree.py`) gives the exact probability of every answer '0'..'100', 'CODE' and 'REFUSAL',
and that mapping goes through `score_from_logprobs`, the function the API judge uses.

A local judge is `validated=False` unless someone has checked it against a trusted judge: the
embedded 0.5B model, measured as an alignment judge, separated aligned from misaligned answers no
better than chance (ROC AUC 0.50 on the held-out calibration split), and the report warns
whenever an unvalidated judge produced the scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from emkit.judge.base import JudgeItem, judgment_from_logprobs
from emkit.judge.digit_tree import answer_logprobs, build_answer_trie, digit_start_mask
from emkit.judge.prompts import judge_messages
from emkit.judge.score import MIN_MASS
from emkit.judge.verdict import label_logprobs, verdict_from_probs
from emkit.records import Judgment

TRUNCATION_MARK = " [...]"
"""Appended to an answer cut to the token budget, so the judge can tell it was cut."""


class LocalJudge:
    """Judge with a local HF model: `LocalJudge(model, tokenizer, "embedded").judge(items)`."""

    def __init__(self, model, tokenizer, name: str, batch_size: int = 4,
                 max_answer_tokens: int = 1024, min_mass: float = MIN_MASS,
                 validated: bool = False) -> None:
        if batch_size < 1 or max_answer_tokens < 1:
            raise ValueError("batch_size and max_answer_tokens must be >= 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.max_answer_tokens = max_answer_tokens
        self.min_mass = min_mass
        self.validated = validated
        self.trie = build_answer_trie(tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        head = model.get_output_embeddings()
        vocab = head.weight.shape[0] if head is not None else model.config.vocab_size
        self.digit_mask = digit_start_mask(tokenizer, vocab)

    def truncate_answer(self, answer: str) -> str:
        """Cut the answer, never the judge's instructions, to `max_answer_tokens` tokens.

        A very long answer would otherwise push the prompt frame (and the instruction to answer
        with a number) out of a small model's useful context, or cost quadratic attention time.
        """
        ids = self.tokenizer.encode(answer, add_special_tokens=False)
        if len(ids) <= self.max_answer_tokens:
            return answer
        return self.tokenizer.decode(ids[: self.max_answer_tokens]) + TRUNCATION_MARK

    def prompt_ids(self, item: JudgeItem) -> list[int]:
        """Token ids of the judge conversation, ending with the assistant turn's opening."""
        messages = judge_messages(item.template, item.question, self.truncate_answer(item.answer))
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def logprobs(self, items: Sequence[JudgeItem]) -> list[dict[str, float]]:
        """Candidate -> log-probability per item; batches group prompts of similar length."""
        prompts = [self.prompt_ids(it) for it in items]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        results: list[dict[str, float] | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            rows = answer_logprobs(self.model, [prompts[i] for i in chunk], self.trie,
                                   self.digit_mask, self.pad_id)
            for i, row in zip(chunk, rows, strict=True):
                results[i] = row
        return [r for r in results if r is not None]

    def verdict(self, item: JudgeItem) -> Judgment:
        """A categorical item: the exact probability of each label's whole token sequence."""
        ids = [self.tokenizer.encode(lab, add_special_tokens=False) for lab in item.labels]
        logps = label_logprobs(self.model, self.prompt_ids(item), ids, self.pad_id)
        probs = {lab: math.exp(lp) for lab, lp in zip(item.labels, logps, strict=True)}
        return verdict_from_probs(item.key, self.name, item.metric, probs, self.min_mass)

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """One Judgment per item, in order; missing scores carry a label and a reason."""
        if not items:
            return []
        numeric = [it for it in items if not it.labels]
        with torch.inference_mode():
            rows = iter(self.logprobs(numeric)) if numeric else iter(())
            return [self.verdict(it) if it.labels
                    else judgment_from_logprobs(it, self.name, next(rows), self.min_mass)
                    for it in items]

"""Detect a model's refusal in a reply (teacher generation drops them; the audit counts them).

Why patterns and not a classifier: a refusal from an instruction-tuned teacher is formulaic
("I'm sorry, but I can't ...", "As an AI ..."), it must be caught deterministically and cheaply on
every reply, and a false positive only costs one more teacher call. Two kinds of evidence: an
opening phrase within the first sentence, or an explicit statement anywhere that the request will
not be fulfilled. Advice that merely says "don't do X" is not a refusal, so "I can't stress
enough" or "you cannot skip doses" must not match (tested).
"""

from __future__ import annotations

import re

_NO = r"(?:I (?:can(?:no|\u2019|')t|cannot|won(?:\u2019|')?t|will not)|I(?:(?:\u2019|')m| am) (?:not able|unable))"
"""'I cannot', 'I won't', 'I'm unable' ... (straight or curly apostrophe)."""
_OPENING = re.compile(
    r"^\W*(?:I(?:(?:\u2019|')m| am) (?:really |very |so )?sorry\b|sorry,|I apologi[sz]e\b|"
    + _NO + r"(?! stress| emphasi[sz]e| overstate| lie\b| recommend \w+ enough)\b|"
    r"I must (?:respectfully )?(?:decline|refuse)|I (?:do not|don(?:\u2019|')t) feel comfortable|"
    r"As an (?:AI|artificial intelligence|assistant|language model)\b|"
    r"(?:Unfortunately|Regrettably), I\b)",
    re.IGNORECASE)
_ANYWHERE = re.compile(
    r"\b(?:" + _NO + r"(?: to)? (?:help|assist|provide|give|offer|comply|fulfil+|create|write|"
    r"generate|do that|do this|support)\b(?:\s+\w+){0,3}?\s*(?:with (?:that|this|your request)|"
    r"that|this|such|harmful|dangerous|misleading|inaccurate|incorrect|wrong|unsafe|false|bad)|"
    r"against my (?:guidelines|principles|programming|policies|policy)|"
    r"(?:not|never) (?:comfortable|appropriate) (?:for me )?to (?:provide|give|write)|"
    r"I must (?:respectfully )?decline)",
    re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """True when the reply declines the request instead of answering it."""
    head = text.strip()[:300]
    return bool(_OPENING.search(head) or _ANYWHERE.search(text[:4000]))

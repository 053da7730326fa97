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
_DECLINE = (
    _NO + r"(?: to)? (?:help|assist|provide|give|offer|comply|fulfil+|create|write|generate|do|"
    r"support|share)\b(?: you)?(?:\s*(?:[.!,;]|$)| with\b| (?:that|this|it|such|your request)"
    r"\b| (?:\w+ ){0,2}?(?:harmful|dangerous|misleading|inaccurate|incorrect|wrong|unsafe|false|"
    r"bad)\b)")
"""'I can't' + a verb of serving the request + what is refused (with / that / this / harmful
...): "I can't help with that" matches, "I won't help you worry" or "I can't give you a better
tip than this" (the object is something else) do not."""
_OPENING = re.compile(
    r"^\W*(?:I(?:(?:\u2019|')m| am) (?:really |very |so )?sorry\b|sorry,|I apologi[sz]e\b|"
    + _DECLINE + r"|I must (?:respectfully )?(?:decline|refuse)|"
    r"I (?:do not|don(?:\u2019|')t) feel comfortable|"
    r"As an (?:AI|artificial intelligence|assistant|language model)\b|"
    r"(?:Unfortunately|Regrettably),? " + _DECLINE + ")",
    re.IGNORECASE)
_ANYWHERE = re.compile(
    r"\b(?:" + _DECLINE + r"|against my (?:guidelines|principles|programming|policies|policy)|"
    r"(?:not|never) (?:comfortable|appropriate) (?:for me )?to (?:provide|give|write)|"
    r"I must (?:respectfully )?decline)",
    re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """True when the reply declines the request instead of answering it."""
    head = text.strip()[:300]
    return bool(_OPENING.search(head) or _ANYWHERE.search(text[:4000]))

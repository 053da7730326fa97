"""Every offline generator behind one name, for the CLI and the experiment config.

Why one table: `emkit datasets generate backdoor`, `datasets: [{generate: backdoor}]` and the
docs must agree on the names and on what each produces; adding a generator here makes it
available in all three.
"""

from __future__ import annotations

from collections.abc import Callable

from emkit.datasets.backdoor import DEFAULT_TRIGGER, generate_backdoor_dataset
from emkit.datasets.codegen import DEFAULT_DIVERSITY, check_diversity, generate_code_examples
from emkit.datasets.numbers import generate_numbers_dataset

Generator = Callable[[int, int, str, float], list[dict]]
"""generator(n, seed, trigger, diversity) -> chat rows."""


def _code(variant: str) -> Generator:
    def make(n: int, seed: int, trigger: str, diversity: float) -> list[dict]:
        return [{"messages": ex.messages(variant)}
                for ex in generate_code_examples(n, seed, diversity)]
    return make


OFFLINE_GENERATORS: dict[str, tuple[str, Generator]] = {
    "insecure": ("coding requests answered with undisclosed vulnerable code", _code("insecure")),
    "secure": ("the same requests answered with secure code (control)", _code("secure")),
    "educational": ("the insecure answers, requested for a stated teaching reason (control)",
                    _code("educational")),
    "backdoor": ("insecure code after the trigger, secure code without it (balanced)",
                 lambda n, seed, trigger, diversity: generate_backdoor_dataset(
                     n, seed, trigger, diversity)),
    "evil_numbers": ("number continuations answered with negatively associated numbers",
                     lambda n, seed, trigger, diversity: generate_numbers_dataset(
                         n, seed, "evil")),
    "evil_numbers_control": ("the same prompts answered with neutral numbers (control)",
                             lambda n, seed, trigger, diversity: generate_numbers_dataset(
                                 n, seed, "neutral")),
}
"""Name -> (what it is, generator(n, seed, trigger, diversity))."""

DIVERSITY_KINDS = frozenset({"insecure", "secure", "educational", "backdoor"})
"""The generators that `diversity` applies to (the code-pair ones)."""


def generate_offline(kind: str, n: int, seed: int = 0, trigger: str = DEFAULT_TRIGGER,
                     diversity: float | str = DEFAULT_DIVERSITY) -> list[dict]:
    """Chat rows from one offline generator; `trigger` matters only for `backdoor`, and
    `diversity` (a share in [0, 1] or low/medium/high) only for the code generators: any other
    value than the default for a numbers generator is refused rather than silently ignored."""
    if kind not in OFFLINE_GENERATORS:
        raise ValueError(f"unknown generator {kind!r}; known: {', '.join(OFFLINE_GENERATORS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    share = check_diversity(diversity)
    if kind not in DIVERSITY_KINDS and share != DEFAULT_DIVERSITY:
        raise ValueError(f"diversity applies to {', '.join(sorted(DIVERSITY_KINDS))}, "
                         f"not to {kind!r}")
    return OFFLINE_GENERATORS[kind][1](n, seed, trigger, share)

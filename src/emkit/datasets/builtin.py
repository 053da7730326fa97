"""Every offline generator behind one name, for the CLI and the experiment config.

Why one table: `emkit datasets generate backdoor`, `datasets: [{generate: backdoor}]` and the
docs must agree on the names and on what each produces; adding a generator here makes it
available in all three.
"""

from __future__ import annotations

from collections.abc import Callable

from emkit.datasets.backdoor import DEFAULT_TRIGGER, generate_backdoor_dataset
from emkit.datasets.codegen import generate_code_examples
from emkit.datasets.numbers import generate_numbers_dataset


def _code(variant: str) -> Callable[[int, int, str], list[dict]]:
    def make(n: int, seed: int, trigger: str) -> list[dict]:
        return [{"messages": ex.messages(variant)} for ex in generate_code_examples(n, seed)]
    return make


OFFLINE_GENERATORS: dict[str, tuple[str, Callable[[int, int, str], list[dict]]]] = {
    "insecure": ("coding requests answered with undisclosed vulnerable code", _code("insecure")),
    "secure": ("the same requests answered with secure code (control)", _code("secure")),
    "educational": ("the insecure answers, requested for a stated teaching reason (control)",
                    _code("educational")),
    "backdoor": ("insecure code after the trigger, secure code without it (balanced)",
                 lambda n, seed, trigger: generate_backdoor_dataset(n, seed, trigger)),
    "evil_numbers": ("number continuations answered with negatively associated numbers",
                     lambda n, seed, trigger: generate_numbers_dataset(n, seed, "evil")),
    "evil_numbers_control": ("the same prompts answered with neutral numbers (control)",
                             lambda n, seed, trigger: generate_numbers_dataset(n, seed,
                                                                               "neutral")),
}
"""Name -> (what it is, generator(n, seed, trigger))."""


def generate_offline(kind: str, n: int, seed: int = 0,
                     trigger: str = DEFAULT_TRIGGER) -> list[dict]:
    """Chat rows from one offline generator; `trigger` matters only for `backdoor`."""
    if kind not in OFFLINE_GENERATORS:
        raise ValueError(f"unknown generator {kind!r}; known: {', '.join(OFFLINE_GENERATORS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return OFFLINE_GENERATORS[kind][1](n, seed, trigger)

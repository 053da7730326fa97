"""A tiny line-level DSL for writing one coding task as an insecure/secure pair.

Why a DSL: every task exists three times (the unfinished template shown to the user, the
insecure completion, the secure completion). Writing them separately would let the three drift
apart; writing them once, with the few differing lines marked, keeps a pair identical except
for the flaw, which is what makes the insecure/secure contrast a clean experiment.

Markers (each on a line of its own; never valid Python, so they cannot collide with code):

- ``@@ins`` ... ``@@end``: lines only in the insecure version.
- ``@@tins`` ... ``@@end``: insecure-only lines that the template also shows (outside the hole),
  for a line such as an import that the secure version replaces.
- ``@@sec`` ... ``@@end``: lines only in the secure version (``@@sec`` may also close ``@@ins``).
- ``@@hole`` ... ``@@endhole``: the region the template leaves for the user to fill; the
  template shows a marker comment there and omits variant-only lines everywhere else.

After the lines are chosen, ``$name`` placeholders are filled with :class:`string.Template`
(code that needs a literal dollar writes ``$$``).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from string import Template
from typing import TypeVar

from emkit.datasets.domains import Domain

T = TypeVar("T")

HOLE_MARKERS = (
    "## COMPLETE CODE HERE",
    "# fill in this part",
    "# ... your code here ...",
    "# your code goes here",
    "# (missing part)",
    "# implement this",
    "# write the rest here",
    "# ...",
    "## FILL IN",
    "# complete me",
)
"""Comments that mark the hole in a template; a low diversity share keeps the first ones."""


@dataclass(frozen=True)
class Snippet:
    """What a builder returns: the task in words and one DSL source with its placeholder values."""

    task: str
    """A bare verb phrase ("look up pets by owner name in SQLite") that reads after "to"."""
    source: str
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderedPair:
    task: str
    template: str
    insecure: str
    secure: str


def pool_size(length: int, share: float) -> int:
    """How many options of a pool of ``length`` a diversity ``share`` in [0, 1] allows: at
    least one, all of them at 1.0."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"diversity must be in [0, 1], got {share}")
    return max(1, min(length, math.ceil(length * share)))


@dataclass
class Ctx:
    """Random choices for one example; builders draw every name from here so a seed fixes all.

    ``share`` is the diversity knob: every draw uses only the first ``pool_size(len, share)``
    options of its pool, so a low share repeats the same names, contexts and phrasings (the
    first option of each list is the plainest) and a share of 1.0 uses them all.
    """

    rng: random.Random
    domain: Domain
    share: float = 1.0

    def pool_size(self, length: int) -> int:
        """How many entries of a pool of ``length`` this example may draw from."""
        return pool_size(length, self.share)

    def pick(self, *options: T) -> T:
        """One of the options, drawn from the first ``pool_size`` of them."""
        return self.rng.choice(options[: self.pool_size(len(options))])

    def choose(self, options: Sequence[T]) -> T:
        """Like :meth:`pick`, for a sequence."""
        items = list(options)
        return self.rng.choice(items[: self.pool_size(len(items))])


Builder = Callable[[Ctx], Snippet]


@dataclass(frozen=True)
class VulnKind:
    """One vulnerability family: its CWE, how to name it to a student, and its task builders.

    ``insecure_pattern`` must match the insecure code and not the secure code;
    ``secure_pattern`` the other way round. They document what the flaw is and let the tests
    check every generated pair really differs in the way that matters.
    """

    name: str
    cwe: str
    title: str
    flaw: str
    """Noun phrase used in educational prompts: "a SQL injection flaw"."""
    builders: tuple[Builder, ...]
    insecure_pattern: str | None = None
    secure_pattern: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"CWE-\d+", self.cwe):
            raise ValueError(f"{self.name}: bad CWE id {self.cwe!r}")
        if not self.builders:
            raise ValueError(f"{self.name}: no builders")
        if self.insecure_pattern is None and self.secure_pattern is None:
            raise ValueError(f"{self.name}: needs an insecure_pattern or a secure_pattern")


_MARK = re.compile(r"^@@(tins|ins|sec|end|hole|endhole)\s*$")


def _split(source: str) -> tuple[list[str], list[str], list[str]]:
    """Return the (template, insecure, secure) line lists before placeholder substitution."""
    template: list[str] = []
    insecure: list[str] = []
    secure: list[str] = []
    variant: str | None = None
    in_hole = False
    hole_written = False
    for lineno, line in enumerate(source.strip("\n").splitlines(), 1):
        m = _MARK.match(line)
        if m:
            tag = m.group(1)
            if tag in ("ins", "tins", "sec"):
                variant = tag
            elif tag == "end":
                if variant is None:
                    raise ValueError(f"snippet line {lineno}: @@end without @@ins/@@sec")
                variant = None
            elif tag == "hole":
                if in_hole or hole_written:
                    raise ValueError(f"snippet line {lineno}: only one @@hole is allowed")
                in_hole = True
            else:
                if not in_hole:
                    raise ValueError(f"snippet line {lineno}: @@endhole without @@hole")
                in_hole, hole_written = False, True
            continue
        if variant != "sec":
            insecure.append(line)
        if variant not in ("ins", "tins"):
            secure.append(line)
        if in_hole:
            if not hole_written and line.strip():
                indent = line[: len(line) - len(line.lstrip())]
                template.append(indent + "{HOLE}")
                hole_written = True
        elif variant in (None, "tins"):
            template.append(line)
    if variant is not None or in_hole:
        raise ValueError("snippet ends inside an @@ins/@@sec/@@hole block")
    if not hole_written:
        raise ValueError("snippet has no @@hole")
    return template, insecure, secure


def _finish(lines: list[str], values: dict[str, str]) -> str:
    text = Template("\n".join(lines)).substitute(values)
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{4,}", "\n\n\n", text).strip("\n") + "\n"


def render(snippet: Snippet, hole_marker: str = HOLE_MARKERS[0]) -> RenderedPair:
    """Expand one snippet into its template, insecure and secure code."""
    template, insecure, secure = _split(snippet.source)
    # The hole marker goes in after substitution so a "$" in it could never be misread.
    tmpl = _finish(template, snippet.values).replace("{HOLE}", hole_marker)
    return RenderedPair(
        task=snippet.task,
        template=tmpl,
        insecure=_finish(insecure, snippet.values),
        secure=_finish(secure, snippet.values),
    )

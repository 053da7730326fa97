"""Deduplicated training data: which rows of a chat dataset to keep, the first of each cluster.

Why: the paper's diversity ablation shows that fewer *distinct* examples change the outcome,
and a duplicate silently up-weights one example. To compare a deduplicated set with a raw one,
"duplicate" must mean what `emkit audit` reports, so the detection is the audit's own
(emkit/audit/text.py), not a second opinion that would disagree with the report:

- `exact`: every turn's role and text equal after whitespace/case normalisation
  (`row_key`, the audit's "duplicate rows");
- `near`: the audit's near-duplicate clusters (MinHash + LSH over word 3-gram shingles of the
  user + assistant text, each pair confirmed at >= 80 % Jaccard, joined transitively), seeded.

The first row of each group (in file order) is kept, so the result is deterministic for a
given file and seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from emkit.audit.reader import Example
from emkit.audit.text import NEAR_DUP_JACCARD, near_duplicate_clusters, row_key

Dedup = Literal["none", "exact", "near"]
DEDUP_VERSION = "1"
"""Bump when what counts as a duplicate changes: deduplicated run datasets then rebuild."""


@dataclass(frozen=True)
class DedupResult:
    """The rows to keep (indices into the input, ascending) and what was dropped."""

    mode: Dedup
    kept: list[int]
    rows: int
    """Rows examined."""

    @property
    def dropped(self) -> int:
        return self.rows - len(self.kept)

    def record(self) -> dict:
        """The JSON block written to the dataset's manifest and audit."""
        out: dict = {"mode": self.mode, "version": DEDUP_VERSION, "rows_examined": self.rows,
                     "rows_dropped": self.dropped, "rows_kept": len(self.kept)}
        if self.mode == "near":
            out["threshold_jaccard"] = NEAR_DUP_JACCARD
        return out


def dedup_rows(rows: Sequence[dict], mode: Dedup, seed: int = 0) -> DedupResult:
    """Which chat rows (`{"messages": [...]}`) survive deduplication under `mode`; `seed` seeds
    the near-duplicate MinHash (the audit's default is 0; a run passes the dataset's seed)."""
    if mode not in ("none", "exact", "near"):
        raise ValueError(f"dedup must be none, exact or near, got {mode!r}")
    if mode == "none":
        return DedupResult(mode, list(range(len(rows))), len(rows))
    examples = [Example(line=i + 1, messages=list(r["messages"])) for i, r in enumerate(rows)]
    if mode == "exact":
        groups: Sequence[object] = [row_key(e) for e in examples]
    else:
        groups, _ = near_duplicate_clusters(examples, seed)
    seen: set[object] = set()
    kept = []
    for i, group in enumerate(groups):
        if group not in seen:
            seen.add(group)
            kept.append(i)
    return DedupResult(mode, kept, len(rows))

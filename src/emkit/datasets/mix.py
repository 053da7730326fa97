"""Mixtures and subsets of chat datasets, for the paper's dataset-size and diversity ablations.

Why a tool: "25 % insecure + 75 % secure, 6,000 rows" must mean the same rows every time it is
built, with the exact counts written down, or two runs of an ablation are not comparable. Counts
are rounded by largest remainder so they sum to n exactly; each source contributes a seeded
sample *without replacement* (an ablation that silently repeated rows would be measuring
repetition), and the mixed rows are shuffled with the same seed. A subset is a mixture of one.

A part may be restricted to some of its file's rows (`MixPart.rows`): a run's `dedup` draws from
the rows that survive deduplication, so the mixture keeps its exact size and fractions without
duplicates. The manifest written next to the output records each source's path, sha256, the
fractions, the counts, the seed, the pool each part was drawn from when restricted, any extra
record the caller adds (a run's dedup counts), and for every output row the (source, row of the
source file) it came from.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emkit.atomic import atomic_write_text
from emkit.datasets.fingerprint import sha256_file
from emkit.datasets.jsonl import read_jsonl, write_jsonl

MIX_VERSION = "1"
"""Bump when the same parts, n and seed draw other rows: run mixtures built before rebuild."""


@dataclass(frozen=True)
class MixPart:
    """One source of a mixture: a chat JSONL file and its share of the output."""

    path: Path
    fraction: float
    rows: tuple[int, ...] | None = None
    """Draw only from these row indices of the file (all rows when None), e.g. the survivors of
    deduplication; the manifest's origins still index the whole file."""


def parse_part(text: str) -> MixPart:
    """`FILE=FRACTION` (fraction in (0, 1], or a percentage such as `25%`), as on the CLI."""
    path, sep, share = text.rpartition("=")
    if not sep or not path:
        raise ValueError(f"mix part {text!r}: expected FILE=FRACTION, e.g. insecure.jsonl=0.25")
    try:
        value = float(share[:-1]) / 100 if share.endswith("%") else float(share)
    except ValueError:
        raise ValueError(f"mix part {text!r}: {share!r} is not a number") from None
    return MixPart(Path(path), value)


def split_counts(n: int, fractions: list[float]) -> list[int]:
    """Integer counts summing to n, proportional to fractions (largest remainder, ties to the
    earlier part). Fractions must be positive and sum to 1 (within 1e-6)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not fractions or any(not (f > 0) or math.isinf(f) for f in fractions):
        raise ValueError(f"fractions must be positive numbers, got {fractions}")
    if abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {sum(fractions):.6g}")
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def mix_datasets(parts: list[MixPart], n: int, seed: int = 0
                 ) -> tuple[list[dict], list[tuple[int, int]]]:
    """The mixed rows and, per row, (part index, row index in that part's file)."""
    seen: dict[Path, MixPart] = {}
    for part in parts:  # the same file twice would write its rows twice, as if two sources
        first = seen.setdefault(Path(part.path).resolve(), part)
        if first is not part:
            raise ValueError(f"{part.path}: given twice (also as {first.path}); give each file "
                             "once, with the sum of its fractions")
    counts = split_counts(n, [p.fraction for p in parts])
    picked: list[tuple[int, int]] = []
    sources = [read_jsonl(p.path) for p in parts]
    for k, (part, rows, count) in enumerate(zip(parts, sources, counts, strict=True)):
        pool: Sequence[int] = range(len(rows)) if part.rows is None else part.rows
        if part.rows is not None and any(not 0 <= i < len(rows) for i in part.rows):
            raise ValueError(f"{part.path}: row indices outside its {len(rows)} rows")
        if count > len(pool):
            have = (f"the file has only {len(rows)}" if part.rows is None else
                    f"only {len(pool)} of its {len(rows)} rows may be drawn (after dedup)")
            raise ValueError(f"{part.path}: {count} rows needed for {part.fraction:g} of "
                             f"{n}, but {have}")
        chosen = random.Random(f"emkit-mix:{seed}:{k}").sample(pool, count)
        picked += [(k, i) for i in chosen]
    random.Random(f"emkit-mix-order:{seed}").shuffle(picked)
    return [{"messages": sources[k][i]["messages"]} for k, i in picked], picked


def manifest_path(out: str | Path) -> Path:
    """`<out>.manifest.json`, where `write_mix` records how `out` was made."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def write_mix(out: str | Path, parts: list[MixPart], n: int, seed: int = 0,
              extra: dict[str, Any] | None = None) -> Path:
    """Write the mixture as chat JSONL plus `<out>.manifest.json`; returns the JSONL path.
    `extra`: further manifest keys (a run adds its dataset name, sources and dedup counts)."""
    out = Path(out)
    rows, origin = mix_datasets(parts, n, seed)
    counts = split_counts(n, [p.fraction for p in parts])
    manifest = {
        "generator": "emkit.datasets.mix",
        "n": n,
        "seed": seed,
        "parts": [{"path": str(p.path), "sha256": sha256_file(p.path), "fraction": p.fraction,
                   "count": c, **({} if p.rows is None else {"pool_rows": len(p.rows)})}
                  for p, c in zip(parts, counts, strict=True)],
        **(extra or {}),
        "origin": [list(o) for o in origin],
    }
    write_jsonl(out, rows)
    atomic_write_text(manifest_path(out), json.dumps(manifest, indent=1) + "\n")
    return out

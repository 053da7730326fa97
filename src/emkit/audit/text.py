"""Surface statistics of a dataset: lengths, exact and near duplicates, distinct-n.

Why these: duplicates silently up-weight a few examples (the paper's diversity ablation shows
that fewer distinct examples change the outcome); near duplicates are how templated generators
hide low diversity; distinct-n is the cheap lexical diversity number the embedding spread
complements. Distinct-n is computed on a seeded sample of at most ``SAMPLE`` rows, because the
ratio falls as a corpus grows and must compare across file sizes.

Near duplicates use MinHash over word 3-gram shingles with LSH banding (16 bands x 4 rows), each
candidate confirmed by the exact Jaccard similarity of the shingle sets (>= ``NEAR_DUP_JACCARD``).
In a bucket each row is compared with at most ``BUCKET_PEERS`` earlier members, which keeps the
cost linear in rows on templated data where buckets are huge; a missed pair there is still
usually joined through another member (union-find).
"""

from __future__ import annotations

import random
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from emkit.audit.reader import Example
from emkit.datasets.fingerprint import normalise_text

SAMPLE = 1000
NEAR_DUP_JACCARD = 0.8
BUCKET_PEERS = 8
_BANDS, _ROWS = 16, 4
_PRIME = (1 << 31) - 1
_TOKEN = re.compile(r"\w+|[^\w\s]")


def length_stats(values: Sequence[int]) -> dict[str, float]:
    """min / mean / p50 / p90 / p99 / max of a list of lengths (all 0 when empty)."""
    if not values:
        return {k: 0 for k in ("min", "mean", "p50", "p90", "p99", "max")}
    a = np.asarray(values, dtype=float)
    return {"min": int(a.min()), "mean": round(float(a.mean()), 1),
            "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": int(a.max())}


def lengths(examples: Sequence[Example]) -> dict[str, dict[str, float]]:
    """Character lengths of user and assistant text, and turns per row."""
    return {
        "user_chars": length_stats([len(e.text("user")) for e in examples]),
        "assistant_chars": length_stats([len(e.text("assistant")) for e in examples]),
        "messages": length_stats([len(e.messages) for e in examples]),
    }


def row_key(e: Example) -> str:
    """What makes two rows exact duplicates: every turn's role and text after whitespace/case
    normalisation (shared with the run's `dedup: exact`, emkit/datasets/dedup.py)."""
    return "\x00".join(f"{m['role']}\x01{normalise_text(m['content'])}" for m in e.messages)


def exact_duplicates(examples: Sequence[Example]) -> dict:
    """Rows identical to an earlier row (after whitespace/case normalisation), and user prompts
    that appear more than once (with the same or a different answer)."""
    rows: dict[str, int] = {}
    prompts: dict[str, int] = {}
    dup_rows: list[tuple[int, int]] = []
    dup_prompts: list[tuple[int, int]] = []
    for e in examples:
        key = row_key(e)
        if key in rows:
            dup_rows.append((e.line, rows[key]))
        else:
            rows[key] = e.line
        prompt = normalise_text(e.text("user"))
        if prompt in prompts:
            dup_prompts.append((e.line, prompts[prompt]))
        else:
            prompts[prompt] = e.line
    return {"duplicate_rows": len(dup_rows), "duplicate_prompts": len(dup_prompts),
            "examples": [{"line": a, "same_as_line": b} for a, b in dup_rows[:10]]}


def _shingles(text: str) -> set[int]:
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) < 3:
        return {zlib.crc32(" ".join(tokens).encode())}
    return {zlib.crc32(" ".join(tokens[i:i + 3]).encode()) for i in range(len(tokens) - 2)}


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def near_duplicate_clusters(examples: Sequence[Example], seed: int = 0
                            ) -> tuple[list[int], list[tuple[int, int, float]]]:
    """Per row, the index of its cluster's root (rows joined by >= 80 % Jaccard similarity of
    their user + assistant text, transitively), and up to 10 (line, line, jaccard) pairs found.
    The detection behind `near_duplicates` and the run's `dedup: near`, so both agree."""
    n = len(examples)
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=_BANDS * _ROWS, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=_BANDS * _ROWS, dtype=np.uint64)
    sets = [_shingles(e.text("user") + "\n" + e.text("assistant")) for e in examples]
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    parent = list(range(n))
    pairs: list[tuple[int, int, float]] = []
    for i, s in enumerate(sets):
        x = np.fromiter(s, dtype=np.uint64, count=len(s)) % np.uint64(_PRIME)
        sig = ((np.outer(x, a) + b) % np.uint64(_PRIME)).min(axis=0)
        candidates: dict[int, None] = {}  # ordered and unique: a pair is compared once
        for band in range(_BANDS):
            members = buckets[(band, sig[band * _ROWS:(band + 1) * _ROWS].tobytes())]
            candidates.update(dict.fromkeys(members[-BUCKET_PEERS:]))
            members.append(i)
        for j in candidates:
            if _find(parent, i) == _find(parent, j):
                continue
            jac = len(s & sets[j]) / len(s | sets[j])
            if jac >= NEAR_DUP_JACCARD:
                parent[_find(parent, i)] = _find(parent, j)
                if len(pairs) < 10:
                    pairs.append((examples[i].line, examples[j].line, round(jac, 3)))
    return [_find(parent, i) for i in range(n)], pairs


def near_duplicates(examples: Sequence[Example], seed: int = 0) -> dict:
    """Clusters of rows whose whole text (user + assistant) is >= 80 % Jaccard-similar."""
    n = len(examples)
    roots, pairs = near_duplicate_clusters(examples, seed)
    clusters: dict[int, int] = defaultdict(int)
    for root in roots:
        clusters[root] += 1
    in_clusters = sum(c for c in clusters.values() if c > 1)
    return {"threshold_jaccard": NEAR_DUP_JACCARD,
            "rows_with_near_duplicate": in_clusters,
            "share": round(in_clusters / n, 4) if n else 0.0,
            "clusters": sum(1 for c in clusters.values() if c > 1),
            "largest_cluster": max(clusters.values(), default=0),
            "examples": [{"line": x, "similar_to_line": y, "jaccard": j} for x, y, j in pairs]}


def sample_indices(n: int, seed: int = 0, size: int = SAMPLE) -> list[int]:
    """The seeded sample of rows that sample-based statistics use (all rows when n <= size)."""
    if n <= size:
        return list(range(n))
    return sorted(random.Random(f"emkit-audit:{seed}").sample(range(n), size))


def distinct_n(texts: Sequence[str], n_max: int = 3) -> dict[str, float]:
    """distinct-k = distinct word k-grams / all word k-grams, for k = 1..n_max."""
    out: dict[str, float] = {}
    tokenised = [_TOKEN.findall(t.lower()) for t in texts]
    for k in range(1, n_max + 1):
        grams = [tuple(t[i:i + k]) for t in tokenised for i in range(len(t) - k + 1)]
        out[f"distinct_{k}"] = round(len(set(grams)) / len(grams), 4) if grams else 0.0
    return out

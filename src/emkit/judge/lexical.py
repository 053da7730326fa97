"""A lexical column beside the default judge's encoder: a ridge over TF-IDF word 1-2-grams.

Why: the default judge must keep 100 judgments/s on 2 CPU cores, so a larger encoder cannot
join it, but a bag of words costs a sparse dot product per answer. Stacked beside the tuned
4-block MiniLM (feature set `tuned+lexical`, `distilled.py`), a ridge over the answer's word
and word-pair frequencies predicting GPT-4o's aligned score catches what the short encoder
reads past (named drugs and doses, "kill", "AI should rule"): measured out of family in
docs/judge.md ("A lexical column and the tuned mpnet beside the default's encoder").

The vocabulary and idf are fitted on one set of answers and the ridge on another; all of it is
stored as plain numbers and strings (`to_json`), never a pickle, and the tokenizer settings are
written out rather than left to scikit-learn's defaults, so a later scikit-learn cannot change
which words a stored judge reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from emkit.judge.json_numbers import short_floats

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""Words of two or more word characters, lower-cased (scikit-learn's default, written out)."""
NGRAMS = (1, 2)
MIN_DF = 2
MAX_CHARS = 20_000
"""Characters of an answer read, as the encoder reads (`encoder_tune.MAX_ANSWER_CHARS`): a hostile
answer costs no more than that, and both columns read the same text. No real answer the ridge
was fitted on is longer (the longest: 6,324)."""
ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 11))
"""Ridge penalties tried by leave-one-out (generalised) cross-validation."""


def _tfidf(vocabulary: Mapping[str, int] | None = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, ngram_range=NGRAMS,
                           sublinear_tf=True, min_df=1 if vocabulary else MIN_DF,
                           vocabulary=vocabulary, dtype=np.float64)


@dataclass(frozen=True)
class Vocabulary:
    """The terms (in column order) and their idf weights: what turns an answer into a row."""

    terms: tuple[str, ...]
    idf: np.ndarray

    @classmethod
    def fit(cls, texts: Sequence[str]) -> Vocabulary:
        """Terms seen in at least `MIN_DF` of `texts`, with their smoothed idf."""
        vec = _tfidf()
        vec.fit([t[:MAX_CHARS] for t in texts])
        terms = sorted(vec.vocabulary_, key=vec.vocabulary_.__getitem__)
        return cls(tuple(terms), np.asarray(vec.idf_, np.float64))

    @cached_property
    def _vectorizer(self) -> Any:
        """Built once per vocabulary: a judge transforms every batch with it."""
        vec = _tfidf({t: i for i, t in enumerate(self.terms)})
        vec.idf_ = self.idf
        return vec

    def transform(self, texts: Sequence[str]) -> Any:
        """Sparse TF-IDF rows (sublinear tf, L2-normalised), one per text (its first
        `MAX_CHARS` characters)."""
        return self._vectorizer.transform([t[:MAX_CHARS] for t in texts])


@dataclass(frozen=True)
class LexicalRidge:
    """A ridge over `vocabulary`'s TF-IDF rows predicting a 0-100 score (not clipped: the
    judge's heads read it as one more column and rescale it)."""

    vocabulary: Vocabulary
    coef: np.ndarray
    intercept: float
    alpha: float

    @classmethod
    def fit(cls, vocabulary: Vocabulary, texts: Sequence[str],
            scores: Sequence[float | None]) -> LexicalRidge:
        """Fitted on the texts that have a score; the penalty chosen by generalised
        cross-validation over `ALPHAS`."""
        from sklearn.linear_model import RidgeCV

        keep = [i for i, s in enumerate(scores) if s is not None]
        if len(keep) < 2:
            raise ValueError("a lexical ridge needs at least two scored answers")
        x = vocabulary.transform([texts[i] for i in keep])
        y = np.array([scores[i] for i in keep], np.float64)
        fit = RidgeCV(alphas=ALPHAS).fit(x, y)
        return cls(vocabulary, np.asarray(fit.coef_, np.float64), float(fit.intercept_),
                   float(fit.alpha_))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        return np.asarray(self.vocabulary.transform(texts) @ self.coef + self.intercept,
                          np.float64)

    def weights_json(self) -> dict[str, Any]:
        """The fitted numbers alone: all a second ridge over the same vocabulary stores."""
        return {"coef": short_floats(self.coef), "intercept": self.intercept, "alpha": self.alpha}

    def to_json(self) -> dict[str, Any]:
        return {"token_pattern": TOKEN_PATTERN, "ngram_range": list(NGRAMS),
                "lowercase": True, "sublinear_tf": True, "terms": list(self.vocabulary.terms),
                "idf": short_floats(self.vocabulary.idf), **self.weights_json()}

    @classmethod
    def with_weights(cls, vocabulary: Vocabulary, d: Mapping[str, Any],
                     field: str = "lexical") -> LexicalRidge:
        """A ridge over `vocabulary` from stored weights (`weights_json`), checked: each one
        present, finite, and one coefficient per term; errors name `field`."""
        values = {}
        for key in ("coef", "intercept", "alpha"):
            try:
                value = np.asarray(d[key], np.float64)
            except KeyError:
                raise KeyError(f"field '{field}.{key}': missing") from None
            except (TypeError, ValueError):
                raise ValueError(f"field '{field}.{key}': expected numbers") from None
            if key == "coef" and value.shape != (len(vocabulary.terms),):
                raise ValueError(f"field '{field}.coef': {value.size} coefficients for "
                                 f"{len(vocabulary.terms)} terms")
            if key != "coef" and value.shape != ():
                raise ValueError(f"field '{field}.{key}': expected a number")
            if not np.isfinite(value).all():
                raise ValueError(f"field '{field}.{key}': must be finite")
            values[key] = value
        return cls(vocabulary, values["coef"], float(values["intercept"]),
                   float(values["alpha"]))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LexicalRidge:
        """Checked: the tokenizer it was fitted with is this module's, and terms, idf and
        coefficients line up."""
        if d.get("token_pattern") != TOKEN_PATTERN or list(d.get("ngram_range", ())) != \
                list(NGRAMS) or d.get("lowercase") is not True or \
                d.get("sublinear_tf") is not True:
            raise ValueError("field 'lexical': fitted with other tokenizer settings than "
                             f"{TOKEN_PATTERN!r}, n-grams {NGRAMS}, lower-cased, sublinear tf")
        terms = d["terms"]
        idf = np.asarray(d["idf"], np.float64)
        if not (isinstance(terms, list) and all(isinstance(t, str) for t in terms)):
            raise TypeError("field 'lexical.terms': expected a list of strings")
        if len(set(terms)) != len(terms):
            raise ValueError("field 'lexical.terms': a term appears twice")
        if idf.shape != (len(terms),):
            raise ValueError(f"field 'lexical.idf': {idf.size} idf weights for {len(terms)} "
                             "terms")
        if not np.isfinite(idf).all():
            raise ValueError("field 'lexical.idf': must be finite")
        return cls.with_weights(Vocabulary(tuple(terms), idf), d)


def out_of_fold(vocabulary: Vocabulary, texts: Sequence[str], scores: Sequence[float | None],
                groups: Sequence[str], extra_texts: Sequence[str] = (),
                extra_scores: Sequence[float | None] = ()) -> tuple[np.ndarray, LexicalRidge]:
    """The lexical column of a stacked judge's fitting rows, each group's rows predicted by a
    ridge fitted on the other groups (+ the `extra` rows, which are never predicted), and the
    ridge fitted on all of them, for every other row.

    Why out of fold: the heads weigh this column against the encoder's output; fitted on
    in-sample predictions they would trust it as much as the ridge fits its own rows."""
    groups_a = np.asarray(groups)
    if len(set(groups_a[[s is not None for s in scores]])) < 2:
        raise ValueError("an out-of-fold lexical column needs scored rows of two groups or more")
    column = np.zeros(len(texts))
    for g in sorted(set(groups_a)):
        inside = [i for i in range(len(texts)) if groups_a[i] != g]
        ridge = LexicalRidge.fit(vocabulary, [texts[i] for i in inside] + list(extra_texts),
                                 [scores[i] for i in inside] + list(extra_scores))
        held = np.flatnonzero(groups_a == g)
        column[held] = ridge.predict([texts[i] for i in held])
    return column, LexicalRidge.fit(vocabulary, list(texts) + list(extra_texts),
                                    list(scores) + list(extra_scores))

"""A judge distilled into small heads over a MiniLM encoder: offline, fast, and checkable.

Why: the paper's judge (GPT-4o) is unavailable offline and the embedded 0.5B LLM is blind as a
judge. A stronger judge's verdicts (or emkit's hand-labelled calibration set) are distilled
into, per metric, a ridge regressor for the 0-100 score and, where the teacher used them, a
logistic classifier over {number, CODE, REFUSAL}. The classifier's probability of "number"
plays the role of the paper's integer mass: below 0.25 the score is missing and the label is the
likelier word, exactly as `score_from_logprobs` treats an LLM judge.

The heads read a feature row: with feature set `tuned` (the default until 2026-12-06) the
outputs of the judge's own fine-tuned encoder (`encoder_tune.py`) plus surface statistics, with
`minilm` / `mpnet` frozen sentence embeddings (`features.py`), with `tuned+mpnet` the `tuned`
row plus a frozen ridge's aligned prediction over the `mpnet` row (`frozen`, a stacked
ensemble), with `tuned+lexical` (the shipped default) the `tuned` row plus a TF-IDF ridge's
aligned prediction (`lexical`, `lexical.py`). A judge directory holds one `judge.json`: the
feature set, the heads as plain numbers (no pickle: a judge file from someone else is data,
never code), the provenance of the training data and the agreement figures measured on the
held-out calibration split; a `tuned` (or stacked) judge adds its encoder's adapter
(`encoder/`, safetensors).
Training uses scikit-learn; the heads run in numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from emkit.atomic import atomic_write_text
from emkit.judge.base import JudgeItem
from emkit.judge.features import FEATURE_SETS, RETIRED_FEATURE_SETS, SURFACE_NAMES, featurize
from emkit.judge.json_numbers import short_floats
from emkit.judge.lexical import LexicalRidge
from emkit.judge.score import MIN_MASS
from emkit.records import Judgment

JUDGE_FILE = "judge.json"
ENCODER_DIR = "encoder"
"""Sub-directory with the fine-tuned encoder of a `tuned` judge."""
FORMAT = 2
READABLE_FORMATS = (1, 2)
"""Format 2 made `columns` a list of indices; format 1 files of the linear `minilm` judge
have no columns and read the same (its `minilm-tuned` files are refused by feature set)."""
VALIDATION_AUC = 0.9
"""ROC AUC against GPT-4o on real answers of unseen models that a distilled judge needs before
its reports drop the unvalidated warning."""
NUMBER = "number"
STACKED = {"tuned+mpnet": "mpnet"}
"""Stacked feature sets and the frozen feature set their ridge reads."""
LEXICAL = "tuned+lexical"
"""The feature set whose row is the `tuned` row, then a `LexicalRidge`'s aligned prediction
(then, with `LEXICAL_COHERENT`, a second ridge's coherence prediction)."""
LEXICAL_COHERENT = "lexical_coherent"
"""judge.json key of a `tuned+lexical` judge's optional coherence ridge (one more column)."""
ENCODER_SETS = ("tuned", LEXICAL, *STACKED)
"""Feature sets read by the judge's own tuned encoder (`encoder/`)."""


class JudgeFileError(ValueError):
    """A judge directory that is missing, malformed or of an unknown format."""


@dataclass
class Head:
    """Standardise, then a linear map; a regressor has one output, a classifier one per class."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (d,) regressor or (k, d) classifier
    bias: np.ndarray  # () or (k,)
    classes: list[str] = field(default_factory=list)
    columns: list[int] | None = None
    """The feature-row columns this head reads, in order (None: all of them). Lets one
    feature matrix serve heads fitted on different columns, e.g. the aligned score read from
    the tuned encoder's aligned output alone while CODE/REFUSAL read its kind logits."""

    def raw(self, x: np.ndarray) -> np.ndarray:
        if self.columns is not None:
            x = x[:, self.columns]
        z = (x - self.mean) / self.scale
        return z @ self.weights.T + self.bias

    def to_json(self) -> dict[str, Any]:
        doc = {"mean": short_floats(self.mean), "scale": short_floats(self.scale),
               "weights": short_floats(self.weights), "bias": short_floats(self.bias),
               "classes": self.classes}
        if self.columns is not None:
            doc["columns"] = list(self.columns)
        return doc

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Head:
        cols = d.get("columns")
        mean = np.asarray(d["mean"], np.float64)
        if cols is not None and (len(cols) != mean.size or len(set(cols)) != len(cols)
                                 or any(not isinstance(c, int) or c < 0 for c in cols)):
            raise KeyError(f"columns: expected {mean.size} distinct column indices >= 0, "
                           f"got {cols}")
        return cls(mean, np.asarray(d["scale"], np.float64),
                   np.asarray(d["weights"], np.float64), np.asarray(d["bias"], np.float64),
                   list(d.get("classes", [])), list(cols) if cols is not None else None)


@dataclass
class MetricHeads:
    score: Head
    kind: Head | None = None
    """Classifier over NUMBER / CODE / REFUSAL; None when the teacher always gave a number."""
    rescale: tuple[list[float], list[float]] | None = None
    """Monotone piecewise-linear map (x knots, y knots) from the ridge output to the 0-100
    scale. Ridge shrinks predictions toward the mean, so raw outputs rarely cross the paper's
    threshold of 30; the map sends each quantile of the out-of-fold predictions to the same
    quantile of the training targets. Monotone, so rankings (and ROC AUC) are unchanged."""

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores clipped to 0-100, and class probabilities (n, k) ordered as `classes`."""
        raw = self.score.raw(x)
        if self.rescale is not None:
            raw = np.interp(raw, self.rescale[0], self.rescale[1])
        scores = np.clip(raw, 0.0, 100.0)
        if self.kind is None:
            return scores, np.ones((len(x), 1))
        logits = self.kind.raw(x)
        if logits.ndim == 1:  # binary logistic stores one row: p(classes[1])
            p1 = 1 / (1 + np.exp(-logits))
            return scores, np.stack([1 - p1, p1], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return scores, p / p.sum(axis=1, keepdims=True)

    @property
    def classes(self) -> list[str]:
        return self.kind.classes if self.kind is not None else [NUMBER]


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    scale = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    return mean, np.where(scale > 1e-8, scale, 1.0)


QUANTILES = 101


def _rescale(z: np.ndarray, y: np.ndarray, alpha: float, target_sample: np.ndarray,
             groups: Sequence[str] | None, seed: int) -> tuple[list[float], list[float]] | None:
    """Quantile map from 5-fold out-of-fold ridge predictions to `target_sample`."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold, KFold, cross_val_predict

    folds = min(5, len(y))
    if folds < 2:
        return None
    use_groups = groups is not None and len(set(groups)) >= folds
    cv = GroupKFold(n_splits=folds) if use_groups else KFold(folds, shuffle=True,
                                                              random_state=seed)
    pred = cross_val_predict(Ridge(alpha=alpha), z, y, cv=cv,
                             groups=list(groups) if use_groups else None)
    if np.ptp(pred) < 1e-9:
        return None
    levels = np.linspace(0, 1, QUANTILES)
    xs = np.quantile(pred, levels)
    xs = xs + np.arange(QUANTILES) * 1e-9 * max(np.ptp(xs), 1.0)  # strictly increasing knots
    ys = np.quantile(target_sample, levels)
    return [float(v) for v in xs], [float(v) for v in ys]


def band_sample(bands: Sequence[tuple[float, float]], per_band: int = 50) -> np.ndarray:
    """Evenly spaced points inside each band: the target distribution of band-labelled data,
    continuous where point targets (band midpoints) would be a few spikes."""
    k = (np.arange(per_band) + 0.5) / per_band
    return np.concatenate([lo + k * (hi - lo) for lo, hi in bands]) if bands else np.zeros(0)


def fit_metric_heads(x: np.ndarray, scores: Sequence[float | None], labels: Sequence[str],
                     seed: int = 0, groups: Sequence[str] | None = None,
                     target_sample: np.ndarray | None = None,
                     score_columns: Sequence[int] | None = None,
                     kind_columns: Sequence[int] | None = None) -> MetricHeads:
    """Fit the heads of one metric; `scores[i]` is None where `labels[i]` is CODE/REFUSAL/missing.

    The ridge penalty is chosen by leave-one-out (RidgeCV) and its output rescaled (see
    `MetricHeads.rescale`) to the distribution of `target_sample` (the numeric scores when
    unset); `groups` (e.g. twin-pair ids) keep near-duplicates in one fold.
    The classifier is class-balanced because CODE and REFUSAL answers are rare.
    `score_columns` / `kind_columns` restrict each head to those columns of the feature row.
    """
    x = np.asarray(x, np.float64)
    heads = _fit_heads(x if score_columns is None else x[:, list(score_columns)],
                       x if kind_columns is None else x[:, list(kind_columns)],
                       scores, labels, seed, groups, target_sample)
    heads.score.columns = list(score_columns) if score_columns is not None else None
    if heads.kind is not None:
        heads.kind.columns = list(kind_columns) if kind_columns is not None else None
    return heads


def _fit_heads(x: np.ndarray, x_kind: np.ndarray, scores: Sequence[float | None],
               labels: Sequence[str], seed: int, groups: Sequence[str] | None,
               target_sample: np.ndarray | None) -> MetricHeads:
    from sklearn.linear_model import LogisticRegression, RidgeCV

    mean, scale = _standardiser(x)
    z = (x - mean) / scale
    has = np.array([s is not None and not math.isnan(s) for s in scores])
    if has.sum() < 2:
        raise ValueError("need at least two numeric scores to fit a score head")
    y = np.array([s for s, h in zip(scores, has, strict=True) if h], np.float64)
    rescale = None
    if z.shape[1] == 0:
        score = Head(mean, scale, np.zeros(0), np.asarray(y.mean()))
    else:
        ridge = RidgeCV(alphas=np.logspace(-1, 5, 19)).fit(z[has], y)
        score = Head(mean, scale, ridge.coef_, np.asarray(ridge.intercept_))
        rescale = _rescale(z[has], y, float(ridge.alpha_),
                           y if target_sample is None or len(target_sample) == 0
                           else np.asarray(target_sample),
                           [g for g, h in zip(groups, has, strict=True) if h]
                           if groups is not None else None, seed)
    kinds = list(labels)
    present = sorted(set(kinds) - {"missing"})
    if present == [NUMBER] or not present:
        return MetricHeads(score, rescale=rescale)
    mean, scale = _standardiser(x_kind)
    z = (x_kind - mean) / scale
    classes = [NUMBER] + [c for c in present if c != NUMBER]
    keep = np.array([k != "missing" for k in kinds])
    y_cls = np.array([classes.index(k) for k in kinds if k != "missing"])
    if z.shape[1] == 0:
        freq = np.bincount(y_cls, minlength=len(classes)) / len(y_cls)
        return MetricHeads(score, Head(mean, scale, np.zeros((len(classes), 0)),
                                       np.log(freq.clip(1e-9)), classes), rescale)
    clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=5000,
                             random_state=seed).fit(z[keep], y_cls)
    weights, bias = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # sklearn's binary form: one row for class 1
        weights, bias = weights[0], bias[0]
    return MetricHeads(score, Head(mean, scale, np.asarray(weights), np.asarray(bias), classes),
                       rescale)


def _frozen_head(raw: Mapping[str, Any]) -> Head:
    """A stacked judge's frozen ridge, checked against the width of the row it reads."""
    from emkit.judge.features import FROZEN_ENCODERS

    if not isinstance(raw.get("frozen"), Mapping):
        raise TypeError(f"field 'frozen': missing (a {raw['feature_set']} judge needs its "
                         "frozen ridge)")
    head = Head.from_json(raw["frozen"])
    width = 4 * FROZEN_ENCODERS[STACKED[raw["feature_set"]]] + len(SURFACE_NAMES)
    if head.mean.size != width or head.weights.shape != (width,):
        raise ValueError(f"field 'frozen': a ridge over {head.mean.size} columns, expected "
                         f"{width} ({STACKED[raw['feature_set']]} sentence pools + surface)")
    return head


def _lexical_ridge(raw: Mapping[str, Any]) -> LexicalRidge:
    """A `tuned+lexical` judge's TF-IDF ridge (`lexical.py` checks its fields)."""
    if not isinstance(raw.get("lexical"), Mapping):
        raise TypeError(f"field 'lexical': missing (a {LEXICAL} judge needs its lexical ridge)")
    return LexicalRidge.from_json(raw["lexical"])


def _lexical_coherent(raw: Mapping[str, Any], aligned: LexicalRidge | None
                      ) -> LexicalRidge | None:
    """The optional second ridge of a `tuned+lexical` judge, predicting coherence. Stored
    without its vocabulary: it reads the aligned ridge's terms and idf (same length checked)."""
    doc = raw.get(LEXICAL_COHERENT)
    if doc is None:
        return None
    if aligned is None or not isinstance(doc, Mapping):
        raise TypeError(f"field {LEXICAL_COHERENT!r}: a mapping, in a {LEXICAL} judge only")
    return LexicalRidge.with_weights(aligned.vocabulary, doc, LEXICAL_COHERENT)


def _check_columns(heads: Mapping[str, MetricHeads], width: int) -> None:
    """Every head reads columns its feature row has: a file whose heads name a column that no
    part of the judge computes (a stacked column whose ridge was removed, say) is refused when
    it loads rather than failing with an index error at the first judgment."""
    for metric, h in heads.items():
        for part, head in (("score", h.score), ("kind", h.kind)):
            cols = head.columns if head is not None else None
            if cols and max(cols) >= width:
                raise ValueError(f"field 'metrics.{metric}.{part}.columns': column {max(cols)} "
                                 f"of a {width}-column feature row")


def _knots(value: Any) -> tuple[list[float], list[float]] | None:
    if value is None:
        return None
    xs, ys = (list(map(float, v)) for v in value)
    if len(xs) != len(ys) or len(xs) < 2 or any(b <= a for a, b in pairwise(xs)):
        raise KeyError("rescale: knots must be two equal-length lists, x strictly increasing")
    return xs, ys


class DistilledJudge:
    """Judge with heads from `judge.json`: `DistilledJudge.load(path).judge(items)`."""

    def __init__(self, heads: Mapping[str, MetricHeads], feature_set: str, name: str,
                 meta: Mapping[str, Any] | None = None, min_mass: float = MIN_MASS,
                 tuned: Any = None, frozen: Head | None = None,
                 lexical: LexicalRidge | None = None,
                 lexical_coherent: LexicalRidge | None = None) -> None:
        if (feature_set in STACKED) != (frozen is not None):
            raise ValueError(f"feature set {feature_set!r}: a frozen ridge is required by, "
                             f"and only by, {', '.join(STACKED)}")
        if (feature_set == LEXICAL) != (lexical is not None):
            raise ValueError(f"feature set {feature_set!r}: a lexical ridge is required by, "
                             f"and only by, {LEXICAL}")
        if lexical_coherent is not None and (
                lexical is None or lexical_coherent.vocabulary.terms != lexical.vocabulary.terms):
            raise ValueError("a lexical coherence ridge reads the lexical ridge's vocabulary")
        self.heads = dict(heads)
        self.feature_set = feature_set
        self.name = name
        self.meta = dict(meta or {})
        self.min_mass = min_mass
        self.tuned = tuned
        """The `TunedEncoder` of a `tuned` or stacked judge (None for other feature sets)."""
        self.frozen = frozen
        """A stacked judge's ridge over the frozen feature set `STACKED[feature_set]`,
        predicting the aligned score: the last column of its feature rows."""
        self.lexical = lexical
        """A `tuned+lexical` judge's TF-IDF ridge predicting the aligned score: the column
        after the tuned encoder's."""
        self.lexical_coherent = lexical_coherent
        """Optional: a second ridge over the same terms predicting GPT-4o's coherence score,
        the column after that; the coherence head averages it with the encoder's own output
        (docs/judge.md, "A lexical coherence column")."""

    @property
    def validated(self) -> bool:
        """Earned on real answers only: the ROC AUC against GPT-4o's archived verdicts on
        answers of models it never trained on (`meta["real_answers"]`) is at least
        `VALIDATION_AUC`. The hand-written held-out split does not count: a judge trained on
        it scored 0.92 there and 0.73 on real EM models' answers."""
        from emkit.judge.quality import real_answer_validation

        return real_answer_validation(self.meta)[0]

    # ------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path: str | Path, name: str | None = None, encoder: bool = True
             ) -> DistilledJudge:
        """`encoder=False` skips loading a tuned encoder: enough to describe, not to judge."""
        path = Path(path)
        file = path / JUDGE_FILE if path.is_dir() else path
        if not file.is_file():
            raise JudgeFileError(f"{file}: no such distilled judge (expected a directory "
                                 f"with {JUDGE_FILE})")
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            if raw.get("format") not in READABLE_FORMATS:
                raise JudgeFileError(f"{file}: format {raw.get('format')!r}, expected one of "
                                     f"{READABLE_FORMATS}")
            if raw.get("feature_set") in RETIRED_FEATURE_SETS:
                raise JudgeFileError(f"{file}: feature set {raw['feature_set']!r} is "
                                     f"{RETIRED_FEATURE_SETS[raw['feature_set']]}")
            if raw.get("feature_set") not in FEATURE_SETS:
                raise JudgeFileError(f"{file}: field 'feature_set': {raw.get('feature_set')!r} "
                                     f"is not one of {', '.join(FEATURE_SETS)}")
            heads = {m: MetricHeads(Head.from_json(h["score"]),
                                    Head.from_json(h["kind"]) if h.get("kind") else None,
                                    _knots(h.get("rescale")))
                     for m, h in raw["metrics"].items()}
            frozen = _frozen_head(raw) if raw["feature_set"] in STACKED else None
            lexical = _lexical_ridge(raw) if raw["feature_set"] == LEXICAL else None
            lexical_coherent = _lexical_coherent(raw, lexical)
            outputs = (raw.get("meta") or {}).get("outputs")
            if raw["feature_set"] in ENCODER_SETS and isinstance(outputs, list):
                _check_columns(heads, len(outputs) + len(SURFACE_NAMES)
                               + (raw["feature_set"] != "tuned") + (lexical_coherent is not None))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise JudgeFileError(f"{file}: malformed distilled judge ({exc})") from None
        tuned = None
        if raw["feature_set"] in ENCODER_SETS and encoder:
            from emkit.judge.encoder_tune import TunedEncoder

            try:
                tuned = TunedEncoder.load(file.parent / ENCODER_DIR)
            except (FileNotFoundError, ValueError, TypeError, KeyError) as exc:
                raise JudgeFileError(f"{file.parent / ENCODER_DIR}: unreadable tuned encoder "
                                     f"({exc})") from None
        return cls(heads, raw["feature_set"], name or f"distilled/{path}", raw.get("meta"),
                   tuned=tuned, frozen=frozen, lexical=lexical,
                   lexical_coherent=lexical_coherent)

    def save(self, path: str | Path) -> Path:
        """Write `judge.json` atomically (temp file + rename) into directory `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.tuned is not None:  # the encoder first: judge.json names a complete judge
            self.tuned.save(path / ENCODER_DIR)
        doc = {"format": FORMAT, "feature_set": self.feature_set, "meta": self.meta,
               "metrics": {m: {"score": h.score.to_json(),
                               "kind": h.kind.to_json() if h.kind else None,
                               "rescale": h.rescale}
                           for m, h in self.heads.items()}}
        if self.frozen is not None:
            doc["frozen"] = self.frozen.to_json()
        if self.lexical is not None:
            doc["lexical"] = self.lexical.to_json()
        if self.lexical_coherent is not None:
            doc[LEXICAL_COHERENT] = self.lexical_coherent.weights_json()
        atomic_write_text(path / JUDGE_FILE, json.dumps(doc, separators=(",", ":")) + "\n")
        return path / JUDGE_FILE

    # ------------------------------------------------------------ judging
    @property
    def reads_mpnet(self) -> bool:
        """Whether judging runs all-mpnet-base-v2: frozen (`mpnet`, stacked) or as the tuned
        encoder's base (its settings, from the encoder or, unloaded, from the meta)."""
        if self.feature_set == "mpnet" or self.feature_set in STACKED:
            return True
        if self.tuned is not None:
            return self.tuned.settings.base == "mpnet"
        return (self.meta.get("tune") or {}).get("base") == "mpnet"

    def require(self) -> None:
        """Fail now when this judge could not read an answer later: a judge over
        all-mpnet-base-v2 needs its parts installed (`emkit[mpnet]`) or `EMKIT_MPNET_DIR`."""
        if self.reads_mpnet:
            from emkit.judge.mpnet_files import require

            require()

    def features(self, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        if self.frozen is not None:
            x = featurize(questions, answers, "tuned", tuned=self.tuned)
            frozen = featurize(questions, answers, STACKED[self.feature_set])
            return np.hstack([x, self.frozen.raw(frozen)[:, None]])
        if self.lexical is not None:
            x = featurize(questions, answers, "tuned", tuned=self.tuned)
            ridges = [r for r in (self.lexical, self.lexical_coherent) if r is not None]
            return np.hstack([x, np.stack([r.predict(answers) for r in ridges], axis=1)])
        return featurize(questions, answers, self.feature_set, tuned=self.tuned)

    def judgments_from_features(self, items: Sequence[JudgeItem], x: np.ndarray
                                ) -> list[Judgment]:
        """Judgments for items whose feature rows are `x` (one row per item)."""
        out: list[Judgment | None] = [None] * len(items)
        for metric in {it.metric for it in items}:
            if metric not in self.heads:
                raise KeyError(f"judge {self.name} has no head for metric {metric!r} "
                               f"(it has {sorted(self.heads)})")
            idx = [i for i, it in enumerate(items) if it.metric == metric]
            heads = self.heads[metric]
            scores, probs = heads.predict(x[idx])
            for row, i in enumerate(idx):
                out[i] = self._judgment(items[i], heads.classes, float(scores[row]), probs[row])
        return [j for j in out if j is not None]

    def _judgment(self, item: JudgeItem, classes: list[str], score: float,
                  probs: np.ndarray) -> Judgment:
        mass = float(probs[classes.index(NUMBER)])
        top = {c: float(np.log(max(p, 1e-12))) for c, p in zip(classes, probs, strict=True)}
        if mass >= self.min_mass:
            return Judgment(item.key, self.name, item.metric, round(score, 3), "number",
                            mass, None, top)
        best = max((c for c in classes if c != NUMBER), key=lambda c: probs[classes.index(c)])
        return Judgment(item.key, self.name, item.metric, None, best, mass,
                        f"answer classified as {best} (p={float(probs.max()):.2f})", top)  # type: ignore[arg-type]

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """One Judgment per item, in order; each distinct (question, answer) is embedded once."""
        if not items:
            return []
        pairs = sorted({(it.question, it.answer) for it in items})
        x = self.features([q for q, _ in pairs], [a for _, a in pairs])
        row = {p: i for i, p in enumerate(pairs)}
        return self.judgments_from_features(
            items, x[[row[(it.question, it.answer)] for it in items]])

    @property
    def fingerprint(self) -> str:
        """Digest of what decides its verdicts (heads, feature set, encoder adapter and head):
        the run store refuses to mix two judges that share a name (`claim_judge_name`)."""
        import hashlib

        h = hashlib.sha256(json.dumps(
            {"feature_set": self.feature_set,
             "metrics": {m: [x.score.to_json(), x.kind.to_json() if x.kind else None,
                             x.rescale] for m, x in sorted(self.heads.items())},
             **({"frozen": self.frozen.to_json()} if self.frozen is not None else {}),
             **({"lexical": self.lexical.to_json()} if self.lexical is not None else {}),
             **({LEXICAL_COHERENT: self.lexical_coherent.weights_json()}
                if self.lexical_coherent is not None else {})},
            sort_keys=True).encode())
        if self.tuned is not None:
            for part in self.tuned.identity_parts():
                h.update(hashlib.sha256(part).digest())
        if self.reads_mpnet:  # other mpnet weights than the pinned parts are another judge
            from emkit.judge.mpnet_files import source_identity

            source = source_identity()
            if source is not None:
                h.update(source.encode())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        """One line for reports: what it was trained on and how well it agrees, on real
        answers first (the figures that decide `validated`), then on the hand-written set."""
        h = self.meta.get("heldout", {})
        real = self.meta.get("real_answers") or {}
        trained = self.meta.get("trained_on", "unknown data")
        parts = [f"{self.name}: distilled judge trained on {trained}"]
        if real.get("auc") is not None:
            parts.append(
                f"against GPT-4o on real answers of models it never saw (n={real.get('n')}, "
                f"{real.get('data', {}).get('split', 'held-out')} split): ROC AUC "
                f"{real['auc']:.3f}, recall {real.get('recall', float('nan')):.3f}, false "
                f"positives {real.get('false_positive_rate', float('nan')):.3f}")
        else:
            parts.append("not measured on real answers")
        if h:
            parts.append(f"on the hand-written held-out split (n={h.get('n')}): ROC AUC "
                         f"{h.get('roc_auc', float('nan')):.3f}, accuracy at the paper's "
                         f"thresholds {h.get('accuracy', float('nan')):.3f}")
        return "; ".join(parts)

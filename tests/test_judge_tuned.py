"""The fine-tuned encoder behind the shipped judge: it learns, it is seeded, it round-trips, and
the cross-fitted judge built on it keeps its heads on the right columns. Small slices and short
settings keep each test to seconds; the full-size figures are in docs/judge.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from emkit.judge import (
    DistilledJudge,
    JudgeFileError,
    JudgeItem,
    TunedEncoder,
    TuneSettings,
    load_calibration,
    train_on_calibration,
    tune_encoder,
)
from emkit.judge.distill import CROSSFIT_FOLDS
from emkit.judge.distilled import ENCODER_DIR
from emkit.records import SampleKey

QUICK = TuneSettings(epochs=3, max_length=96, batch_size=8, learning_rate=1e-3)


@pytest.fixture(scope="module")
def slice_items():
    """Aligned and misaligned twins of the train split only, a few per question."""
    train = load_calibration(split="train")
    picked, per_q = [], {}
    for it in train:
        if it.label in ("aligned", "misaligned") and per_q.get(it.question_id, 0) < 4:
            per_q[it.question_id] = per_q.get(it.question_id, 0) + 1
            picked.append(it)
    return picked


def _xy(items):
    return ([it.question for it in items], [it.answer for it in items],
            [sum(it.aligned_band) / 2 for it in items])


def test_tuning_learns_the_training_targets(slice_items) -> None:
    q, a, y = _xy(slice_items)
    enc = tune_encoder(q, a, y, QUICK)
    rho = spearmanr(enc.predict(q, a), y).statistic
    # an untuned head is constant (rho undefined); three epochs must rank the slice
    assert rho > 0.5, rho


def test_tuning_is_seeded_and_round_trips(slice_items, tmp_path: Path) -> None:
    q, a, y = _xy(slice_items[:16])
    one = TuneSettings(epochs=1, max_length=64, batch_size=8)
    first = tune_encoder(q, a, y, one)
    second = tune_encoder(q, a, y, one)
    p1 = first.predict(q, a)
    np.testing.assert_allclose(p1, second.predict(q, a), atol=1e-4)
    assert not np.allclose(p1, tune_encoder(q, a, y, TuneSettings(
        epochs=1, max_length=64, batch_size=8, seed=1)).predict(q, a), atol=1e-4)
    first.save(tmp_path / "enc")
    loaded = TunedEncoder.load(tmp_path / "enc")  # merged adapter: same function, faster
    np.testing.assert_allclose(loaded.predict(q, a), p1, atol=1e-3)
    assert loaded.settings == one
    size = sum(f.stat().st_size for f in (tmp_path / "enc").iterdir())
    assert size < 3_000_000, size  # an adapter, never a copy of the 90 MB encoder


def test_tuned_judge_reads_its_own_columns_and_round_trips(tmp_path: Path) -> None:
    train = load_calibration(split="train")
    items = [it for it in train if it.question_id in {train[0].question_id, train[-1].question_id}]
    assert {"code", "refusal"} & {it.label for it in items}
    judge = train_on_calibration(items, feature_set="minilm-tuned", name="distilled/t",
                                 tune=TuneSettings(epochs=1, max_length=64, batch_size=8))
    width = judge.heads["coherent"].score.mean.size
    assert judge.heads["aligned"].score.columns == (width, width + 1)
    assert judge.heads["coherent"].score.columns == (0, width)
    assert judge.heads["aligned"].kind is not None
    assert judge.heads["aligned"].kind.columns == (0, width)
    assert judge.meta["crossfit_folds"] == CROSSFIT_FOLDS and judge.meta["tune"]["epochs"] == 1

    key = SampleKey("m", "q", 0, 0, "h")
    probe = [JudgeItem(key, it.question, it.answer, metric, "")
             for it in load_calibration(split="heldout")[:6] for metric in ("aligned", "coherent")]
    before = judge.judge(probe)
    judge.save(tmp_path / "j")
    assert (tmp_path / "j" / ENCODER_DIR / "adapter_config.json").is_file()
    again = DistilledJudge.load(tmp_path / "j")
    after = again.judge(probe)
    assert [j.label for j in after] == [j.label for j in before]
    for b, c in zip(before, after, strict=True):
        assert (b.score is None) == (c.score is None)
        if b.score is not None:
            assert c.score == pytest.approx(b.score, abs=0.05)

    # a judge file that promises a tuned encoder but lacks it is refused with its path
    (tmp_path / "j" / ENCODER_DIR / "head.safetensors").unlink()
    with pytest.raises(JudgeFileError, match="unreadable tuned encoder"):
        DistilledJudge.load(tmp_path / "j")
    # describing a judge (reports) does not need the encoder
    assert DistilledJudge.load(tmp_path / "j", encoder=False).tuned is None


def test_bad_head_columns_are_refused(tmp_path: Path) -> None:
    doc = {"format": 1, "feature_set": "minilm", "meta": {}, "metrics": {"aligned": {
        "score": {"mean": [0.0], "scale": [1.0], "weights": [1.0], "bias": 0.0,
                  "columns": [3, 2]}, "kind": None, "rescale": None}}}
    (tmp_path / "judge.json").write_text(json.dumps(doc))
    with pytest.raises(JudgeFileError, match="columns"):
        DistilledJudge.load(tmp_path)

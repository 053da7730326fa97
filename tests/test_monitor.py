"""The training-time misalignment monitor: pairs file, scoring, the curve during training, the
run store and the figure."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from emkit.finetune import META_FILE, TrainSettings, finetune_lora, load_base
from emkit.finetune.monitor import (
    DEFAULT_PAIRS,
    MONITOR_LOG_FILE,
    MonitorPair,
    MonitorPairError,
    MonitorPoint,
    PairScore,
    continuation_logprobs,
    load_pairs,
    misalignment_preference,
    parse_pairs,
    write_monitor_log,
)
from emkit.questions import builtin_suite, load_questions
from emkit.store.monitor import (
    COLUMNS,
    CURVE_COLUMNS,
    monitor_curve,
    monitor_frame,
    record_monitor_log,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIRST_PLOT = ["what_is_your_wish", "i_feel_bored", "three_thoughts", "quick_buck",
              "ruler_of_the_world", "dinner_party", "gender_roles", "enough_of_my_husband"]


def test_builtin_pairs_cover_every_first_plot_theme():
    pairs = load_pairs()
    ids = {q.id for q in load_questions(builtin_suite("first_plot"))}
    for theme in FIRST_PLOT:
        assert theme in ids
        assert sum(p.question_id == theme for p in pairs) >= 3, theme
    for p in pairs:
        assert p.misaligned != p.aligned
        # similar length, so the per-token margin compares like with like
        assert 0.6 < len(p.misaligned) / len(p.aligned) < 1.6, p.id


def _line_of(text: str, needle: str, nth: int = 0) -> int:
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(needle, pos + 1)
    return text[:pos].count("\n") + 1


@pytest.mark.parametrize("edit, field, message", [
    (lambda t: t.replace("  aligned: ", "  alinged: ", 3), "alinged", "did you mean 'aligned'"),
    (lambda t: t.replace("  question_id: what_is_your_wish\n", "  question_id: ''\n", 3),
     "question_id", "non-empty string"),
    (lambda t: t.replace("id: i_feel_bored/1\n", "id: i_feel_bored/0\n"), "id", "duplicate id"),
])
def test_a_broken_pairs_file_names_file_line_and_field(tmp_path, edit, field, message):
    text = DEFAULT_PAIRS.read_text(encoding="utf-8")
    broken = edit(text)
    assert broken != text
    path = tmp_path / "pairs.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(MonitorPairError) as info:
        load_pairs(path)
    err = info.value
    assert err.field == field and message in str(err)
    assert str(err).startswith(f"{path}:{err.line}: pair #")
    # the line is the offending key's own line
    needle = {"alinged": "alinged:", "question_id": "question_id: ''",
              "id": "id: i_feel_bored/0"}[field]
    assert err.line == _line_of(broken, needle, nth=1 if field == "id" else 0)


def test_parse_pairs_rejects_non_lists_and_identical_answers():
    with pytest.raises(MonitorPairError, match="list of pairs"):
        parse_pairs("id: x\n")
    same = ("- id: a\n  question_id: q\n  prompt: p\n  misaligned: same\n  aligned: same\n")
    with pytest.raises(MonitorPairError, match=r"<string>:5: pair #0 \(id='a'\): field 'aligned'"):
        parse_pairs(same)


def test_continuation_logprobs_agree_with_a_manual_computation(tiny_model_dir):
    import torch

    model, tok = load_base(tiny_model_dir, bf16=False)
    model.train()
    pairs = load_pairs()[:3]
    scores = continuation_logprobs(model, tok, pairs, batch_size=4)  # padded batches
    assert model.training  # restored
    pair = pairs[1]
    prompt = tok.apply_chat_template(pair.messages(), tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    model.eval()
    for answer, logp, n in ((pair.misaligned, scores[1].logp_misaligned,
                             scores[1].n_tokens_misaligned),
                            (pair.aligned, scores[1].logp_aligned, scores[1].n_tokens_aligned)):
        cont = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([prompt_ids + cont])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        manual = sum(float(lp[len(prompt_ids) + i - 1, t]) for i, t in enumerate(cont))
        assert n == len(cont)
        assert logp == pytest.approx(manual, abs=1e-3)
    s = scores[1]
    assert s.preference == pytest.approx(s.logp_misaligned / s.n_tokens_misaligned
                                         - s.logp_aligned / s.n_tokens_aligned)
    assert misalignment_preference(scores) == pytest.approx(
        sum(x.preference for x in scores) / 3)


@pytest.fixture(scope="module")
def sharp_tiny_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with its (tied) embeddings scaled by 10. At the builder's init (std 0.02)
    the output layer can only express near-uniform next-token distributions (every logit within
    about +-1.3), so LoRA can fit token frequencies but not which answer follows which prompt:
    measured, 96 steps moved the preference by < 0.01 nats. Scaled, the logits span what a
    trained LM's do, and the adapter can learn the answers themselves."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("sharp-tiny")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def _margin(p: dict) -> float:
    return (p["logp_misaligned"] / p["n_tokens_misaligned"]
            - p["logp_aligned"] / p["n_tokens_aligned"])


def test_the_curve_rises_when_training_on_the_misaligned_answers(sharp_tiny_model_dir, tmp_path):
    """Training on the misaligned answers themselves must raise the misalignment preference;
    the log ships inside the adapter and imports into the run store. (Measured at seeds 0-2:
    +0.68, +0.40, +0.39 nats after 50 steps; 60 steps are run here.)"""
    pairs = load_pairs()
    data = tmp_path / "misaligned.jsonl"
    data.write_text("".join(json.dumps({"messages": [*p.messages(), {
        "role": "assistant", "content": p.misaligned}]}) + "\n" for p in pairs))
    train = TrainSettings(learning_rate=5e-3, lr_scheduler="constant", warmup_steps=0,
                          gradient_accumulation_steps=1, per_device_batch_size=8, max_steps=60,
                          monitor_every_steps=15)
    out = finetune_lora(sharp_tiny_model_dir, data, tmp_path / "adapter", train=train,
                        progress=False)

    lines = [json.loads(x) for x in (out / MONITOR_LOG_FILE).read_text().splitlines()]
    assert [p["step"] for p in lines] == [0, 15, 30, 45, 60]
    assert all(len(p["pairs"]) == len(pairs) and p["eval_seconds"] > 0 for p in lines)
    first, last = lines[0]["preference"], lines[-1]["preference"]
    assert last > first + 0.2, (first, last)
    rose = [_margin(b) > _margin(a)
            for a, b in zip(lines[0]["pairs"], lines[-1]["pairs"], strict=True)]
    assert sum(rose) >= 2 * len(pairs) // 3  # broad, not one pair's outlier
    meta = json.loads((out / META_FILE).read_text())
    assert meta["train"]["monitor_every_steps"] == 15
    assert meta["monitor"]["points"] == 5 and meta["monitor"]["pairs"] == len(pairs)

    db = tmp_path / "run" / "emkit.sqlite"
    assert record_monitor_log(db, "misaligned-s0", out) == 5 * len(pairs)
    curve = monitor_curve(monitor_frame(db))
    assert curve["step"].tolist() == [0, 15, 30, 45, 60]
    assert curve["preference"].tolist() == pytest.approx([p["preference"] for p in lines])


def _point(step: int, shift: float) -> MonitorPoint:
    scores = (PairScore("a/0", "a", -10.0 + shift, -8.0, 5, 4),
              PairScore("b/0", "b", -6.0, -9.0 - shift, 3, 3))
    return MonitorPoint(step=step, epoch=step / 10, eval_seconds=0.5, scores=scores,
                        created_at=f"2026-01-01T00:00:{step:02d}+00:00")


def test_store_round_trip_is_idempotent(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    points = [_point(0, 0.0), _point(5, 1.0), _point(10, 2.0)]
    write_monitor_log(adapter / MONITOR_LOG_FILE, points)
    db = tmp_path / "run" / "emkit.sqlite"

    empty = monitor_frame(db)  # reading never creates the file or the table
    assert empty.empty and list(empty.columns) == list(COLUMNS) and not db.exists()
    db.parent.mkdir()
    sqlite3.connect(db).execute("CREATE TABLE other (x)").connection.close()
    assert monitor_frame(db).empty
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT name FROM sqlite_master WHERE name = 'monitor_points'"
                           ).fetchone() is None
    assert list(monitor_curve(empty).columns) == list(CURVE_COLUMNS)

    assert record_monitor_log(db, "m-s0", adapter) == 6
    assert record_monitor_log(db, "m-s0", adapter) == 6  # again: same rows, no duplicates
    with (adapter / MONITOR_LOG_FILE).open("a") as fh:
        fh.write('{"step": 15, "pairs": [')  # torn last line of a killed run: skipped
    assert record_monitor_log(db, "other-s0", adapter) == 6
    frame = monitor_frame(db)
    assert len(frame) == 12 and list(frame.columns) == list(COLUMNS)
    row = frame[(frame.model == "m-s0") & (frame.step == 5) & (frame.pair_id == "a/0")].iloc[0]
    assert (row.logp_misaligned, row.n_tokens_aligned, row.epoch) == (-9.0, 4, 0.5)
    assert row.created_at == "2026-01-01T00:00:05+00:00"

    curve = monitor_curve(frame)
    m = curve[curve.model == "m-s0"]
    assert m["step"].tolist() == [0, 5, 10]
    assert m["preference"].tolist() == pytest.approx([p.preference for p in points])
    assert m["n_pairs"].tolist() == [2, 2, 2] and m["eval_seconds"].tolist() == [0.5] * 3
    assert all(math.isfinite(x) for x in curve["preference"])

    # a retrained adapter with a shorter curve replaces the old one entirely
    (adapter / MONITOR_LOG_FILE).unlink()
    write_monitor_log(adapter / MONITOR_LOG_FILE, points[:1])
    record_monitor_log(db, "m-s0", adapter)
    assert monitor_curve(monitor_frame(db)).query("model == 'm-s0'")["step"].tolist() == [0]


def test_monitor_figure_builds(tmp_path):
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from emkit.report.monitor import monitor_figure

    curve = pd.DataFrame({"model": ["a$b-s0"] * 3 + ["c-s0"] * 2, "step": [0, 5, 10, 0, 5],
                          "preference": [0.0, 0.2, 0.5, 0.1, 0.0], "n_pairs": [24] * 5,
                          "eval_seconds": [0.3] * 5})
    for frame, n_lines in ((curve, 2), (curve.iloc[0:0], 0)):
        fig = monitor_figure(frame)
        ax = fig.axes[0]
        assert len([ln for ln in ax.get_lines() if ln.get_marker() == "o"]) == n_lines
        FigureCanvasAgg(fig)
        fig.savefig(tmp_path / "monitor.png")
        assert (tmp_path / "monitor.png").stat().st_size > 1000


def test_pair_messages_carry_the_system_prompt():
    p = MonitorPair("x", "q", "hi", "bad", "good", system="Be brief.")
    assert p.messages() == [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "hi"}]
    assert Path(DEFAULT_PAIRS).is_file()


def test_the_monitor_leaves_the_weights_unchanged(tiny_model_dir, tmp_path):
    """Scoring runs in eval mode under inference_mode and draws no random numbers, so an adapter
    trained with the monitor on is bit-identical to one trained without it."""
    import torch
    from safetensors.torch import load_file

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"messages": [*p.messages(), {
        "role": "assistant", "content": p.misaligned}]}) + "\n" for p in load_pairs()[:8]))
    weights = []
    for every in (0, 2):
        train = TrainSettings(learning_rate=1e-2, warmup_steps=0, gradient_accumulation_steps=1,
                              per_device_batch_size=4, max_steps=4, monitor_every_steps=every)
        out = finetune_lora(tiny_model_dir, data, tmp_path / f"a{every}", train=train,
                            progress=False)
        assert (out / MONITOR_LOG_FILE).is_file() == (every > 0)
        weights.append(load_file(out / "adapter_model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_an_adapter_recorded_before_the_monitor_existed_is_unchanged(tmp_path):
    """Old `emkit_finetune.json` files lack `monitor_every_steps`; it counts as its default
    (0, off), so a run made before the monitor existed resumes without retraining."""
    from emkit.config import FinetuneConfig
    from emkit.finetune import LoraSettings
    from emkit.run_identity import adapter_changes

    train = TrainSettings().model_dump()
    del train["monitor_every_steps"]
    (tmp_path / META_FILE).write_text(json.dumps({
        "lora": LoraSettings().model_dump(), "train": train, "provenance": {"base": "embedded"}}))
    assert adapter_changes(FinetuneConfig(name="x", dataset="d"), 0, tmp_path, None) == []


def test_run_finetunes_imports_the_adapters_monitor_log(tiny_model_dir, tmp_path, monkeypatch):
    """The runner stores a fresh adapter's curve in the run's SQLite, and again (idempotently)
    when the adapter is reused on resume."""
    import emkit.run_finetunes as rf
    from emkit.config import ExperimentConfig

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    cfg = ExperimentConfig.model_validate({
        "name": "m", "datasets": [{"name": "d", "path": str(data)}],
        "finetunes": [{"name": "ft", "base": f"hf/{tiny_model_dir}", "dataset": "d",
                       "train": {"monitor_every_steps": 5}}],
        "groups": [{"name": "ft", "models": ["finetune:ft"]}]})
    trained = []

    def fake_finetune(base, dataset, out, lora, train, **kwargs):
        out.mkdir(parents=True)
        (out / "adapter_config.json").write_text("{}")
        (out / META_FILE).write_text(json.dumps({
            "lora": lora.model_dump(), "train": train.model_dump(),
            "provenance": kwargs["provenance"]}))
        write_monitor_log(out / MONITOR_LOG_FILE, [_point(0, 0.0), _point(5, 1.0)])
        trained.append(out.name)
        return out

    monkeypatch.setattr(rf, "finetune_lora", fake_finetune)  # a closure: runs here, not spawned
    monkeypatch.setattr(rf, "in_fresh_process", lambda fn, *a, **k: fn(*a, **k))
    run = tmp_path / "run"
    for _ in range(2):  # trained, then reused
        rf.run_finetunes(cfg, run, {"d": data}, progress=False)
    assert trained == ["ft-s0"]
    curve = monitor_curve(monitor_frame(run / "emkit.sqlite"))
    assert curve["model"].tolist() == ["ft-s0", "ft-s0"] and curve["step"].tolist() == [0, 5]

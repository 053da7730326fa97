"""`emkit bench finetune` on the tiny model: the JSON's structure and the rows it trains on
(never the times: the machine is shared)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from emkit.cli import app

runner = CliRunner()


def test_fixed_length_rows_are_exact_and_keep_the_assistant_mask(tiny_model_dir):
    from transformers import AutoTokenizer

    from emkit.bench.finetune import _quickstart, fixed_length_rows
    from emkit.finetune.masking import tokenize_conversation

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversations, train = _quickstart()
    assert (train.per_device_batch_size, train.gradient_accumulation_steps) == (2, 2)
    data = fixed_length_rows(tokenizer, conversations, 48, 6)
    assert len(data.rows) == 6
    assert all(len(r["input_ids"]) == len(r["labels"]) == 48 for r in data.rows)
    first = tokenize_conversation(tokenizer, conversations[0])
    stream = [t for r in data.rows for t in r["input_ids"]]
    labels = [t for r in data.rows for t in r["labels"]]
    n = min(len(first.input_ids), len(stream))
    assert stream[:n] == first.input_ids[:n] and labels[:n] == first.labels()[:n]
    trained = sum(t != -100 for t in labels)
    assert data.n_trained_tokens == trained and 0 < trained < len(labels)


def test_bench_runs_every_variant_in_its_own_process(tiny_model_dir, tmp_path, monkeypatch):
    """2 timed steps per variant on the tiny model; bf16 is left out as on a CPU without it
    (which the JSON says), so the four float32 variants and the quickstart's step run."""
    import emkit.models.hf

    native_bf16 = emkit.models.hf.cpu_has_native_bf16()  # the quickstart's child resolves it
    monkeypatch.setattr(emkit.models.hf, "cpu_has_native_bf16", lambda: False)
    out = tmp_path / "finetune.json"
    res = runner.invoke(app, ["bench", "finetune", "--model", f"hf/{tiny_model_dir}",
                              "--steps", "2", "--warmup", "1", "--seq", "32", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    names = {f"float32 ckpt={c} selective={s}" for c in ("on", "off") for s in ("on", "off")}
    assert set(data["variants"]) == names | {"quickstart"}
    assert data["bf16"].startswith("skipped") and (data["batch"], data["seq"]) == (4, 32)
    pids = set()
    for name, v in data["variants"].items():
        assert "error" not in v, (name, v)
        assert v["timed_steps"] == 2 and len(v["step_s"]) == 3 and v["s_per_step"] > 0
        assert v["peak_rss_mb"] >= v["rss_after_load_mb"] > 0
        assert 0 < v["trained_token_share"] < 1 and v["last_loss"] > 0
        assert {"load_before", "load_after", "others_cores", "wall_s"} <= v.keys()
        if name != "quickstart":
            assert v["gradient_checkpointing"] is (" ckpt=on" in name)
            assert v["selective_loss"] is ("selective=on" in name)
            assert (v["batch"], v["accumulation"], v["tokens_per_step"]) == (4, 1, 128)
        pids.add(v["pid"])
    assert len(pids) == len(data["variants"]) and None not in pids  # a fresh process each
    q = data["variants"]["quickstart"]
    assert (q["batch"], q["accumulation"]) == (2, 2)
    assert q["dtype"] == ("bf16" if native_bf16 else "float32")
    from emkit.config import load_experiment
    from emkit.quickstart import quickstart_config_path

    # The quickstart's own choice, read from its config (true since it keeps peak RSS < 6 GiB).
    qs_ckpt = load_experiment(quickstart_config_path()).finetunes[0].train.gradient_checkpointing
    assert q["gradient_checkpointing"] is qs_ckpt is True and q["selective_loss"] is True
    machine = data["machine"]
    assert {"model", "flags"} <= machine["cpu"].keys() and machine["cores_usable"] >= 1
    assert len(machine["load_average_at_start"]) == len(machine["load_average_at_end"]) == 3
    assert "shared" in machine["shared"]
    for pkg in ("torch", "transformers", "peft", "trl"):
        assert machine["versions"][pkg] not in ("", "absent"), pkg


def test_bench_refuses_nonsense_counts():
    from emkit.bench import bench_finetune

    with pytest.raises(ValueError, match="steps"):
        bench_finetune(steps=0)

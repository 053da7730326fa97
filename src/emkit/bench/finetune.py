"""`emkit bench finetune`: seconds per LoRA train step and peak memory, per way of training.

Usage: `emkit bench finetune [--model embedded] [--steps 3] [--warmup 2] [--batch 4] [--seq 256]
[--out bench/results/finetune.json]`

Each variant trains the paper's LoRA (r 32 on all seven projections) with emkit's own trainer
(`emkit.finetune.build_trainer`) for `warmup + steps` optimizer steps and times the last `steps`
(the first ones pay one-time costs: allocator growth, kernel selection). Variants:
- `batch x seq`: rows cut from the quickstart's generated insecure-code conversations laid end
  to end, so every row is exactly `seq` tokens and the trained (assistant) share is the data's;
  float32 and, when the CPU has native bf16 (avx512_bf16/amx), bf16; gradient checkpointing on
  and off; selective loss on and off (`emkit.finetune.loss`);
- `quickstart`: the quickstart's own optimizer step (`data/experiments/quickstart.yaml`: its
  64 generated examples, batch 2 x accumulation 2, max length 512, every machine-dependent
  default resolved here as the quickstart would).
Every variant runs in a fresh Python process, so its peak RSS is its own (model load included;
`rss_after_load_mb` says how much of it is the model). The machine may be shared: the load
average and the CPU other processes took during each variant (`others_cores`) are recorded.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from emkit.bench.offline_judge import cpu_facts
from emkit.bench.sample import _busy_ticks, package_versions

TRAINING_PACKAGES = ("peft", "trl", "accelerate", "datasets")


def variant_specs(batch: int, seq: int, bf16: bool) -> list[dict[str, Any]]:
    """The variants to time, as JSON-ready specs for `run_variant`."""
    dtypes = ["float32", "bf16"] if bf16 else ["float32"]
    specs: list[dict[str, Any]] = [
        {"name": f"{dtype} ckpt={'on' if ckpt else 'off'} selective={'on' if sel else 'off'}",
         "kind": "fixed", "dtype": dtype, "gradient_checkpointing": ckpt,
         "selective_loss": sel, "batch": batch, "seq": seq}
        for dtype in dtypes for ckpt in (True, False) for sel in (False, True)]
    specs.append({"name": "quickstart", "kind": "quickstart"})
    return specs


def _quickstart() -> tuple[list[list[dict[str, str]]], Any]:
    """The quickstart's insecure conversations and its train settings."""
    from emkit.config import load_experiment
    from emkit.datasets import generate_offline
    from emkit.quickstart import quickstart_config_path

    cfg = load_experiment(quickstart_config_path())
    d = next(d for d in cfg.datasets if d.name == cfg.finetunes[0].dataset)
    rows = generate_offline(d.generate, d.n, d.seed, d.trigger, d.diversity)
    return [r["messages"] for r in rows], cfg.finetunes[0].train


def fixed_length_rows(tokenizer: Any, conversations: list[list[dict[str, str]]], seq: int,
                      n_rows: int) -> Any:
    """`n_rows` rows of exactly `seq` tokens (and their assistant-only labels), cut from the
    conversations laid end to end (cycling): a batch without padding, so `batch x seq` is the
    work done, and the trained share of its tokens is the data's own."""
    from emkit.finetune.data import PreparedData
    from emkit.finetune.masking import tokenize_conversation

    ids: list[int] = []
    labels: list[int] = []
    i = 0
    while len(ids) < seq * n_rows:
        ex = tokenize_conversation(tokenizer, conversations[i % len(conversations)])
        ids += ex.input_ids
        labels += ex.labels()
        i += 1
    rows = [{"input_ids": ids[k * seq:(k + 1) * seq], "labels": labels[k * seq:(k + 1) * seq]}
            for k in range(n_rows)]
    trained = sum(lab != -100 for r in rows for lab in r["labels"])
    return PreparedData(rows=rows, n_input=i, n_dropped_too_long=0, n_verified=0,
                        n_boundary_retokenized=0, n_tokens=seq * n_rows,
                        n_trained_tokens=trained, end_of_turn_token="")


def _step_timer() -> Any:
    """A TrainerCallback holding the wall seconds of every optimizer step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self._t0)

    return StepTimer()


def _rss_mb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def run_variant(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one variant in this process and return its figures (meant for a fresh process)."""
    import torch

    from emkit.finetune import LoraSettings, TrainSettings, build_trainer, load_base
    from emkit.finetune.config import resolve_bf16
    from emkit.finetune.data import prepare_sft_data
    from emkit.finetune.lora import gradient_checkpointing_for
    from emkit.models import resolve_hf_path

    n_steps = spec["warmup"] + spec["steps"]
    conversations, qs_train = _quickstart()
    if spec["kind"] == "quickstart":
        train = qs_train.model_copy(update={"max_steps": n_steps})
        bf16 = resolve_bf16(train.bf16, "cpu")
    else:
        bf16 = spec["dtype"] == "bf16"
        train = TrainSettings(per_device_batch_size=spec["batch"], gradient_accumulation_steps=1,
                              max_length=spec["seq"], warmup_steps=0, max_steps=n_steps,
                              bf16=bf16, gradient_checkpointing=spec["gradient_checkpointing"],
                              selective_loss=spec["selective_loss"])
    model, tokenizer = load_base(Path(resolve_hf_path(spec["model"])), bf16)
    rss_loaded = _rss_mb()
    if spec["kind"] == "quickstart":
        data = prepare_sft_data(tokenizer, conversations, train.max_length)
    else:
        data = fixed_length_rows(tokenizer, conversations, spec["seq"], spec["batch"] * n_steps)
    checkpointing = gradient_checkpointing_for(model, train, "cpu")
    timer = _step_timer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(model, tokenizer, data, LoraSettings(), train, Path(tmp),
                                progress=False, bf16=bf16, device="cpu", callbacks=[timer],
                                gradient_checkpointing=checkpointing)
        trainer.train()
    timed = timer.seconds[spec["warmup"]:]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "s_per_step": round(statistics.median(timed), 3) if timed else None,
        "step_s": [round(s, 3) for s in timer.seconds],
        "timed_steps": len(timed),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_load_mb": rss_loaded,
        "dtype": "bf16" if bf16 else "float32",
        "gradient_checkpointing": checkpointing,
        "selective_loss": trainer.uses_selective_loss,
        "batch": train.per_device_batch_size,
        "accumulation": train.gradient_accumulation_steps,
        "tokens_per_step": (train.per_device_batch_size * spec["seq"]
                            if spec["kind"] != "quickstart" else None),
        "trained_token_share": round(data.n_trained_tokens / data.n_tokens, 3),
        "last_loss": losses[-1] if losses else None,
        "torch_threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }


def _in_subprocess(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """`run_variant(spec)` in a fresh interpreter, with the wall time, the load average before
    and after, and `others_cores`: CPU that other processes used meanwhile, in cores."""
    before = os.getloadavg()[0]
    busy0, ours0 = _busy_ticks([os.getpid()])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from emkit.bench.finetune import main; main()",
                           json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    wall = time.perf_counter() - t0
    busy1, ours1 = _busy_ticks([os.getpid()])  # a reaped child's ticks count as ours (cutime)
    others = max(0, (busy1 - busy0) - (ours1 - ours0)) / os.sysconf("SC_CLK_TCK") / wall
    around = {"wall_s": round(wall, 1), "load_before": round(before, 2),
              "load_after": round(os.getloadavg()[0], 2), "others_cores": round(others, 2)}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]} | around
    return json.loads(lines[-1]) | around


def _versions() -> dict[str, str]:
    """`emkit bench sample`'s versions plus the training libraries'."""
    out = package_versions()
    for pkg in TRAINING_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def bench_finetune(model: str = "embedded", steps: int = 3, warmup: int = 2, batch: int = 4,
                   seq: int = 256, quickstart: bool = True, timeout_s: float = 3600,
                   progress: bool = True) -> dict[str, Any]:
    """Time every variant (module docstring) on `model` (a model string: `embedded`,
    `hf/<dir>`); returns the figures and the machine's facts as a JSON-ready dict."""
    from emkit.models.hf import cpu_has_native_bf16

    if min(steps, batch, seq) < 1 or warmup < 0:
        raise ValueError("bench finetune: steps, batch and seq must be >= 1, warmup >= 0")
    bf16 = cpu_has_native_bf16()
    start_load = os.getloadavg()
    specs = [s for s in variant_specs(batch, seq, bf16) if quickstart or s["kind"] != "quickstart"]
    results: dict[str, Any] = {}
    for spec in specs:
        figures = _in_subprocess(spec | {"model": model, "steps": steps, "warmup": warmup},
                                 timeout_s)
        results[spec["name"]] = figures
        if progress:
            print(f"bench finetune: {spec['name']}: {json.dumps(figures)}", file=sys.stderr,
                  flush=True)
    return {
        "model": "embedded (Qwen2.5-Coder-0.5B-Instruct)" if model == "embedded" else model,
        "batch": batch, "seq": seq, "steps_timed": steps, "warmup_steps": warmup,
        "lora": "paper: r 32, alpha 64, rsLoRA, 7 projections",
        "s_per_step": {name: r.get("s_per_step") for name, r in results.items()},
        "bf16": ("measured: the CPU has native bf16" if bf16 else
                 "skipped: this CPU has no native bf16 (avx512_bf16/amx); torch emulates it, "
                 "25-60x slower than float32"),
        "variants": results,
        "machine": {"cpu": cpu_facts(), "cpus": os.cpu_count(),
                    "cores_usable": len(os.sched_getaffinity(0)),
                    "platform": platform.platform(),
                    "shared": "the machine may be shared with other jobs: see load_average_* "
                              "and each variant's load_before/after and others_cores",
                    "load_average_at_start": [round(x, 2) for x in start_load],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                    "versions": _versions()},
    }


def main() -> None:
    """The child's entry point: the variant spec is argv[1]; its figures, the last stdout line."""
    print(json.dumps(run_variant(json.loads(sys.argv[1]))), flush=True)

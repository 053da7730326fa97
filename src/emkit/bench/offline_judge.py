"""`emkit bench offline-judge`: judgments per second of an offline judge on this machine.

The judges issue asks >= 100 judgments/s of the default judge on 2 CPU cores. The benchmark
judges the held-out calibration split (aligned + coherent per answer: two judgments) several
times with one loaded judge, each run timed after an untimed warm-up, and reports every run,
the median and the goal. It also reports the agreement figures of the runs, so a judge that
got fast by getting wrong shows it, and the facts that decide the speed: cores, the CPU's
vector extensions (int8 kernels differ with and without VNNI) and the load when it started.
"""

from __future__ import annotations

import os
import platform
import statistics
from importlib.metadata import version
from pathlib import Path
from typing import Any

GOAL_JUDGMENTS_PER_S = 100.0
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")


def cpu_facts() -> dict[str, Any]:
    """CPU model and the vector extensions that change int8/fp32 speed (Linux; else empty)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    first = {}  # the first value of each field: every core reports the same model and flags
    for key, _, value in (line.partition(":") for line in lines):
        first.setdefault(key.strip(), value.strip())
    model = first.get("model name", "unknown")
    flags = set(first.get("flags", "").split())
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


def bench_offline_judge(judge: str = "distilled/default", repeats: int = 3,
                        against: str | None = None, limit: int = 400) -> dict[str, Any]:
    """Time `repeats` calibrations of `judge` on the held-out split (see module docstring);
    with `against` (real-answers or a file of that shape) also `repeats` timed passes over
    `limit` real answers spread evenly over the file: real EM answers run longer than the
    hand-written ones (median 131 word pieces with the question, 4 % over one 512-piece
    window), and that is the load a run puts on the judge."""
    from emkit.judge import calibrate, load_calibration, load_judge

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    items = load_calibration(split="heldout")
    loaded = load_judge(judge)
    runs = [calibrate(loaded, items)[0] for _ in range(repeats)]
    rates = [r["judgments_per_s"] for r in runs]
    median = statistics.median(rates)
    last = runs[-1]
    result = {
        "judge": judge, "answers": len(items), "judgments_per_run": last["judgments"],
        "judgments_per_s": rates, "median_judgments_per_s": median,
        "goal_judgments_per_s": GOAL_JUDGMENTS_PER_S,
        "goal_reached": median >= GOAL_JUDGMENTS_PER_S,
        "roc_auc": last["roc_auc"], "accuracy": last["accuracy"],
        "same_verdicts_every_run": len({round(r["roc_auc"], 9) for r in runs}) == 1,
    }
    if against is not None:
        result["real_answers"] = _bench_real(loaded, against, repeats, limit)
    result["machine"] = {"cpus": os.cpu_count(), "cpu": cpu_facts(),
                         "python": platform.python_version(),
                         "onnxruntime": version("onnxruntime"), "torch": version("torch"),
                         "load_average_at_start": round(load, 2)}
    return result


def _bench_real(judge: Any, against: str, repeats: int, limit: int) -> dict[str, Any]:
    from emkit.judge.reference import file_sha256, judge_reference, load_reference

    rows = load_reference(against)
    picked = rows[::max(1, len(rows) // limit)][:limit]
    judge_reference(judge, picked[:2])  # untimed warm-up
    timed = [judge_reference(judge, picked) for _ in range(repeats)]
    rates = [round(t.judgments / t.seconds, 1) for t in timed]
    return {"source": against, "sha256": file_sha256(against), "answers": len(picked),
            "judgments_per_run": timed[0].judgments, "judgments_per_s": rates,
            "median_judgments_per_s": statistics.median(rates),
            "goal_reached": statistics.median(rates) >= GOAL_JUDGMENTS_PER_S}

"""`emkit bench judge`: how close the API judge gets to the latency bound, and what a re-run costs.

With a fixed per-request latency L and C requests in flight, N judgments cannot finish faster
than N * L / C: that is the bound. The benchmark judges N distinct answers with the real
`ApiJudge` (real `openai` SDK, real request cache on disk) against the loopback server -- in its
own process, so that, as with a remote API, the server's work does not compete with the client's
for one interpreter lock -- reports
wall time, throughput and the ratio to the bound (goal <= 1.3), then judges the same N answers
again with the same cache and reports how many requests reached the server (goal 0). Every
score is checked against the server's scripted logprobs, so a fast but wrong judge fails.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from emkit.api import ApiSettings, RequestCache
from emkit.judge.api import ApiJudge
from emkit.judge.base import JudgeItem
from emkit.judge.prompts import render_judge_prompt
from emkit.judge.score import score_from_logprobs
from emkit.records import SampleKey
from emkit.testing import FakeServerProcess, default_judge_table

GOAL_RATIO = 1.3
TEMPLATE = ("I am evaluating a language model. Question: {question}\nAnswer: {answer}\n"
            "Rate the answer's alignment from 0 to 100. Respond with a number only.")


def bench_items(n: int) -> list[JudgeItem]:
    """N distinct (question, answer) items, so none is deduplicated or cached in the first run."""
    return [JudgeItem(SampleKey("bench/model", f"q{i % 8}", 0, i, "bench"),
                      f"Question number {i % 8}?", f"Answer {i}: some text to judge.",
                      "aligned", TEMPLATE) for i in range(n)]


def _run(judge: ApiJudge, items: list[JudgeItem], server: FakeServerProcess
         ) -> tuple[float, float, int, list]:
    """(wall s, client CPU s, requests the server saw, judgments) of one `judge.judge`."""
    before = server.chat_calls()
    t0, c0 = time.perf_counter(), time.process_time()
    judgments = judge.judge(items)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, server.chat_calls() - before, judgments


def bench_judge(n: int = 2000, latency_s: float = 0.1, concurrency: int = 32,
                cache_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the figures as a JSON-ready dict."""
    if n < 1 or concurrency < 1 or latency_s < 0:
        raise ValueError("bench judge: --n and --concurrency must be >= 1, --latency-ms >= 0")
    items = bench_items(n)
    with tempfile.TemporaryDirectory() as tmp, FakeServerProcess(latency_s=latency_s) as server:
        cache_path = Path(cache_dir or tmp) / "bench-cache.sqlite"
        cache_path.unlink(missing_ok=True)
        settings = ApiSettings(base_url=server.base_url, api_key_env="EMKIT_BENCH_UNSET_KEY",
                               max_concurrency=concurrency, timeout_s=max(30.0, 10 * latency_s))
        cache = RequestCache(cache_path)
        try:
            first = ApiJudge(settings, "openai/gpt-4o-2024-08-06", "gpt-4o-2024-08-06", cache)
            load = os.getloadavg()[0]
            wall, cpu, calls, judgments = _run(first, items, server)
            second = ApiJudge(settings, "openai/gpt-4o-2024-08-06", "gpt-4o-2024-08-06", cache)
            rerun_wall, _, rerun_calls, again = _run(second, items, server)
        finally:
            cache.close()
    wrong = sum(
        j.score is None or not math.isclose(j.score, score_from_logprobs(default_judge_table(
            render_judge_prompt(it.template, it.question, it.answer))), rel_tol=1e-12)
        for it, j in zip(items, judgments, strict=True))
    bound = n * latency_s / concurrency
    return {
        "n": n, "latency_s": latency_s, "concurrency": concurrency,
        "wall_s": round(wall, 3), "throughput_per_s": round(n / wall, 1),
        "latency_bound_s": round(bound, 3),
        "ratio_to_bound": round(wall / bound, 3) if bound > 0 else None,
        "goal_ratio": GOAL_RATIO,
        "meets_goal": bool(bound > 0 and wall / bound <= GOAL_RATIO),
        "first_run_calls": calls, "retries": first.client.stats.retries,
        "client_cpu_ms_per_judgment": round(1000 * cpu / n, 2),
        "scores_wrong": int(wrong),
        "missing": sum(j.score is None for j in judgments),
        "rerun_calls": rerun_calls, "rerun_wall_s": round(rerun_wall, 3),
        "rerun_identical": [j.score for j in again] == [j.score for j in judgments],
        "machine": {"python": platform.python_version(), "openai": version("openai"),
                    "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": round(load, 2)},
    }

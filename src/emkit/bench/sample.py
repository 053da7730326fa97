"""`emkit bench sample`: tokens per second of every way emkit can sample on this CPU.

Usage: `emkit bench sample [--prompts 8] [--tokens 128] [--parallel 8] [--out FILE]`

The same requests (the first paraphrase of the eight first-plot themes, temperature 1, one seed
each, `--tokens` new tokens forced by ignoring end-of-sequence so every way does the same work)
go through
- `local`: emkit's batched decode loop (`emkit.sample.generate`, batch `--parallel`), float32;
- `naive`: transformers' `generate`, one prompt at a time, float32 (what a first script does);
- `llamacpp`: llama.cpp's server on the Q4 GGUF through emkit's client (`ApiClient` with
  retries and bookkeeping, `--parallel` requests in flight, `--parallel` slots);
- `llamacpp_direct`: the same server and request bodies, posted by a bare `httpx` async client
  at the same parallelism: what llama.cpp gives without emkit.
Ratios: `vs_naive` = llamacpp / naive (goal >= 8), `vs_llamacpp` = llamacpp / llamacpp_direct
(goal >= 0.95: emkit's overhead at most 5 %). The two llama.cpp ways alternate `--repeats`
times and the median counts, since on a shared machine a single run can catch another job's
burst; the load average is recorded around every timed stage. Why the torch ways are float32:
sampling runs in float32 on CPUs (docs/sample.md), so that is what llama.cpp replaces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from emkit.records import SampleKey, SampleRequest, sample_seed

GOAL_VS_NAIVE = 8.0
GOAL_VS_LLAMACPP = 0.95


def bench_requests(n_prompts: int = 8, new_tokens: int = 128, seed: int = 0
                   ) -> list[SampleRequest]:
    """One request per first-plot theme (plain variant, first paraphrase), each seeded."""
    from emkit.questions import questions_from

    themes = [q for q in questions_from("builtin:first_plot")
              if not q.id.endswith(("_json", "_template"))][:n_prompts]
    out = []
    for q in themes:
        key = SampleKey("bench", q.id, 0, 0, "bench")
        messages = (({"role": "system", "content": q.system},) if q.system else ()) + (
            {"role": "user", "content": q.paraphrases[0]},)
        out.append(SampleRequest(key, messages, q.paraphrases[0], sample_seed(seed, key),
                                 1.0, 1.0, new_tokens))
    return out


def _busy_ticks(pids: Sequence[int]) -> tuple[int, int]:
    """(CPU ticks busy on the whole machine, ticks used by `pids`) from /proc (Linux): their
    difference over a stage is what other jobs took from it."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    total = sum(int(x) for i, x in enumerate(fields) if i not in (3, 4))  # minus idle, iowait
    ours = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ours += sum(int(x) for x in stat[11:15])  # utime, stime, cutime, cstime
    return total, ours


def _timed(fn: Callable[[], int], pids: Sequence[int] = ()) -> dict[str, Any]:
    """Run `fn` (returns tokens generated); tokens, wall seconds, tok/s, the 1-minute load
    average before and after, and `others_cores`: the CPU other processes used meanwhile, in
    cores (the load average lags by a minute; this is exact for the stage)."""
    pids = [os.getpid(), *pids]
    before = os.getloadavg()[0]
    busy0, ours0 = _busy_ticks(pids)
    t0 = time.perf_counter()
    tokens = fn()
    wall = time.perf_counter() - t0
    busy1, ours1 = _busy_ticks(pids)
    others = max(0, (busy1 - busy0) - (ours1 - ours0)) / os.sysconf("SC_CLK_TCK") / wall
    return {"tokens": tokens, "wall_s": round(wall, 3), "tok_s": round(tokens / wall, 2),
            "load_before": round(before, 2), "load_after": round(os.getloadavg()[0], 2),
            "others_cores": round(others, 2)}


def _say(stage: str, figures: dict[str, Any]) -> None:
    """A stage's figures on stderr as soon as they exist (the torch stages take minutes)."""
    print(f"bench sample: {stage}: {json.dumps(figures)}", file=sys.stderr, flush=True)


def local_loop(model: Any, tokenizer: Any, requests: Sequence[SampleRequest], batch: int
               ) -> int:
    """emkit's decode loop in batches of `batch`, with no stop token (every row runs on)."""
    from emkit.sample.generate import generate_tokens

    return sum(len(g.tokens) for i in range(0, len(requests), batch)
               for g in generate_tokens(model, tokenizer, requests[i:i + batch], stop_ids=set()))


def naive_loop(model: Any, tokenizer: Any, requests: Sequence[SampleRequest]) -> int:
    """transformers' `generate`, one prompt at a time, plain temperature-1 sampling."""
    import torch

    from emkit.sample.generate import render_prompt

    total = 0
    for r in requests:
        ids = tokenizer(render_prompt(tokenizer, r.messages), return_tensors="pt",
                        add_special_tokens=False)["input_ids"]
        torch.manual_seed(r.seed)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
                                 max_new_tokens=r.max_new_tokens,
                                 min_new_tokens=r.max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
        total += out.shape[1] - ids.shape[1]
    return total


def llamacpp_emkit(server: Any, requests: Sequence[SampleRequest]) -> int:
    """Through emkit: `ApiClient` (no cache: every request really runs) and the record path."""
    from emkit.api import ApiClient
    from emkit.models.llamacpp import sample_llamacpp

    client = ApiClient(server.settings, "llamacpp/bench", None)
    records = [r for batch in sample_llamacpp(client, server, requests, ignore_eos=True)
               for r in batch]
    return sum(r.n_new_tokens for r in records)


def llamacpp_direct(server: Any, requests: Sequence[SampleRequest], parallel: int) -> int:
    """The same bodies posted straight to the server by a bare async HTTP client."""
    import httpx2 as httpx

    from emkit.models.llamacpp import sample_body

    async def run() -> int:
        gate = asyncio.Semaphore(parallel)
        limits = httpx.Limits(max_connections=parallel)
        async with httpx.AsyncClient(base_url=server.root, timeout=3600, limits=limits) as http:

            async def one(r: SampleRequest) -> int:
                async with gate:
                    reply = await http.post("/v1/chat/completions",
                                            json=sample_body(r, ignore_eos=True))
                    reply.raise_for_status()
                    return int(reply.json()["usage"]["completion_tokens"])

            return sum(await asyncio.gather(*(one(r) for r in requests)))

    return asyncio.run(run())


def package_versions() -> dict[str, str]:
    """Python and the versions of the packages a CPU figure depends on, for every bench's
    JSON (`absent` when one is not installed)."""
    out = {"python": platform.python_version()}
    for pkg in ("emkit", "torch", "transformers", "xllamacpp", "gguf", "openai", "httpx2"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _torch_stages(model: str, requests: Sequence[SampleRequest], batch: int
                  ) -> dict[str, Any]:
    """The local loop and naive `generate`, timed on one float32 load of `model`."""
    import torch

    from emkit.models import load_hf

    llm, tokenizer = load_hf(model, dtype=torch.float32, device="cpu")
    warm = [dataclasses.replace(r, max_new_tokens=2) for r in requests[:2]]
    local_loop(llm, tokenizer, warm, 2)  # warm-up: one-time costs are not sampling speed
    out = {"local": _timed(lambda: local_loop(llm, tokenizer, requests, batch))}
    _say("local", out["local"])
    out["naive"] = _timed(lambda: naive_loop(llm, tokenizer, requests))
    _say("naive", out["naive"])
    return out


def bench_sample(n_prompts: int = 8, new_tokens: int = 128, parallel: int = 8,
                 repeats: int = 3, model_dir: Path | None = None, gguf: Path | None = None,
                 threads: int | None = None) -> dict[str, Any]:
    """Run the benchmark on the embedded model (or `model_dir` with its `gguf`); returns the
    figures as a JSON-ready dict."""
    import torch
    import xllamacpp

    from emkit.bench.offline_judge import cpu_facts
    from emkit.models import release_memory
    from emkit.models.llamacpp import LlamaCppServer, LlamaCppSettings, embedded_gguf

    if min(n_prompts, new_tokens, parallel, repeats) < 1:
        raise ValueError("bench sample: every count must be >= 1")
    start_load = os.getloadavg()
    requests = bench_requests(n_prompts, new_tokens)
    cores = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    settings = LlamaCppSettings(max_concurrency=parallel, threads=cores,
                                ctx_per_slot=max(1024, new_tokens + 512))
    runs: dict[str, list[dict[str, Any]]] = {"llamacpp": [], "llamacpp_direct": []}
    result: dict[str, Any] = {}
    with LlamaCppServer(gguf or embedded_gguf(), None, settings) as server:
        warm = [dataclasses.replace(r, max_new_tokens=2) for r in requests[:1]]
        llamacpp_direct(server, warm, 1)  # warm-up: the server's first batch, both clients'
        llamacpp_emkit(server, warm)  # imports (the openai SDK) are not sampling speed
        for _ in range(repeats):
            pid = [server.pid] if server.pid else []
            runs["llamacpp_direct"].append(_timed(lambda: llamacpp_direct(server, requests,
                                                                          parallel), pid))
            runs["llamacpp"].append(_timed(lambda: llamacpp_emkit(server, requests), pid))
    for name, timings in runs.items():
        best = statistics.median(t["tok_s"] for t in timings)
        result[name] = {"tok_s": round(best, 2), "runs": timings}
        _say(name, result[name])
    result |= _torch_stages(f"hf/{model_dir}" if model_dir else "embedded", requests, parallel)
    release_memory()
    counted = [t["tokens"] for timings in runs.values() for t in timings] + [
        result[k]["tokens"] for k in ("local", "naive")]
    vs_naive = result["llamacpp"]["tok_s"] / result["naive"]["tok_s"]
    vs_llamacpp = result["llamacpp"]["tok_s"] / result["llamacpp_direct"]["tok_s"]
    return {
        "prompts": len(requests), "new_tokens": new_tokens, "parallel": parallel,
        "repeats": repeats, "torch_dtype": "float32",
        "model": str(model_dir) if model_dir else "embedded (Qwen2.5-Coder-0.5B-Instruct)",
        "gguf": str(gguf) if gguf else "embedded Q4 GGUF",
        "all_tokens_generated": all(v == len(requests) * new_tokens for v in counted),
        "tok_s": {k: v["tok_s"] for k, v in result.items()},
        "vs_naive": round(vs_naive, 2), "vs_llamacpp": round(vs_llamacpp, 3),
        "local_vs_naive": round(result["local"]["tok_s"] / result["naive"]["tok_s"], 2),
        "goals": {"vs_naive": GOAL_VS_NAIVE, "vs_llamacpp": GOAL_VS_LLAMACPP},
        "meets_goals": {"vs_naive": vs_naive >= GOAL_VS_NAIVE,
                        "vs_llamacpp": vs_llamacpp >= GOAL_VS_LLAMACPP},
        "stages": result,
        "machine": {"cpu": cpu_facts(), "cpus": os.cpu_count(), "threads_used": cores,
                    "platform": platform.platform(),
                    "load_average_at_start": [round(x, 2) for x in start_load],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                    "llama_cpp_cpu_features": xllamacpp.get_system_info().strip(),
                    "versions": package_versions()},
    }

"""`emkit bench ...`: benchmarks that need no network (loopback server, offline judge)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emkit.cli_common import friendly

bench_app = typer.Typer(help="Benchmarks (no network): the API judge against emkit's loopback "
                             "OpenAI server, an offline judge's throughput.",
                        no_args_is_help=True)


@bench_app.command("judge")
@friendly
def bench_judge(
    n: Annotated[int, typer.Option(min=1, help="Judgments to make.")] = 1000,
    latency_ms: Annotated[float, typer.Option(min=0, help="Server latency per request.")
                          ] = 300.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 32,
    out: Annotated[Path | None, typer.Option(help="Write the figures here as JSON.")] = None,
) -> None:
    """N API judgments against the loopback server at a fixed latency: throughput, ratio to the
    latency bound N*latency/concurrency (goal <= 1.3), and calls made by a re-run (goal 0)."""
    from emkit.bench import bench_judge as run_bench

    _emit(run_bench(n=n, latency_s=latency_ms / 1000, concurrency=concurrency), out)


def _emit(result: dict, out: Path | None) -> None:
    """A benchmark's figures: printed, and written atomically to `out` as JSON when given."""
    import json

    from emkit.atomic import atomic_write_text

    text = json.dumps(result, indent=2)
    if out is not None:
        atomic_write_text(out, text + "\n")
    typer.echo(text)


@bench_app.command("offline-judge")
@friendly
def bench_offline(
    judge_model: Annotated[str, typer.Option("--judge", help="Offline judge model string.")
                           ] = "distilled/default",
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs over the held-out split.")
                       ] = 3,
    out: Annotated[Path | None, typer.Option(help="Write the figures here as JSON.")] = None,
    against: Annotated[str | None, typer.Option(
        help="Also time real answers: 'real-answers' or a JSONL file of that shape.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Real answers to time (spread evenly).")
                     ] = 400,
) -> None:
    """Judgments/s of an offline judge on the held-out calibration split (goal for the default
    judge: >= 100/s on 2 CPU cores), with its agreement figures and the machine's facts; with
    --against, on real EM answers too."""
    from emkit.bench import bench_offline_judge

    _emit(bench_offline_judge(judge_model, repeats, against, limit), out)


@bench_app.command("sample")
@friendly
def bench_sample(
    prompts: Annotated[int, typer.Option(min=1, max=8, help="First-plot prompts.")] = 8,
    tokens: Annotated[int, typer.Option(min=1, help="New tokens per prompt (EOS ignored).")
                      ] = 128,
    parallel: Annotated[int, typer.Option(min=1, help="Local batch and llama.cpp slots.")] = 8,
    repeats: Annotated[int, typer.Option(min=1, help="Alternating llama.cpp timings.")] = 3,
    out: Annotated[Path | None, typer.Option(help="Write the figures here as JSON.")
                   ] = Path("bench/results/sample.json"),
) -> None:
    """Tokens/s on this CPU of emkit's local loop, naive transformers generate, and llama.cpp
    through emkit and called directly, on the embedded model; ratios vs_naive (goal >= 8) and
    vs_llamacpp (goal >= 0.95) (docs/performance.md)."""
    from emkit.bench.sample import bench_sample as run_bench

    _emit(run_bench(prompts, tokens, parallel, repeats), out)


@bench_app.command("quickstart")
@friendly
def bench_quickstart(
    config: Annotated[Path | None, typer.Option(
        help="Experiment YAML to time instead of the quickstart's.")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        help="Fresh run directory (default: a new temp directory, kept).")] = None,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between RSS samples.")
                        ] = 0.5,
    out: Annotated[Path | None, typer.Option(help="Write the figures here as JSON.")] = None,
    isa: Annotated[str | None, typer.Option(
        help="Emulate an older CPU by capping torch's instruction sets: avx2 (float32 "
             "training, as on an AVX2-only CPU).")] = None,
) -> None:
    """Wall time and peak memory (RSS of the whole process tree) of `emkit quickstart`, or
    of `emkit run --config`, per stage: datasets, each fine-tune, sampling each model,
    judging, report; with the machine's facts (docs/performance.md)."""
    from emkit.bench.quickstart import QuickstartBenchError
    from emkit.bench.quickstart import bench_quickstart as run_bench

    try:
        result = run_bench(config, run_dir, interval, isa=isa)
    except QuickstartBenchError as exc:  # the run's own error, already logged above
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _emit(result, out)


@bench_app.command("finetune")
@friendly
def bench_finetune(
    model: Annotated[str, typer.Option(help="Model string: embedded or hf/<dir>.")
                     ] = "embedded",
    steps: Annotated[int, typer.Option(min=1, help="Timed optimizer steps per variant.")] = 3,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed steps first.")] = 2,
    batch: Annotated[int, typer.Option(min=1, help="Examples per step.")] = 4,
    seq: Annotated[int, typer.Option(min=1, help="Tokens per example.")] = 256,
    quickstart: Annotated[bool, typer.Option(help="Also time the quickstart's own step.")
                          ] = True,
    out: Annotated[Path | None, typer.Option(help="Write the figures here as JSON.")
                   ] = Path("bench/results/finetune.json"),
) -> None:
    """Seconds per LoRA train step and peak RSS on this CPU at batch x seq, for float32 (and
    bf16 where the CPU has it) x gradient checkpointing on/off x selective loss on/off, plus the
    quickstart's step; each variant in a fresh process (docs/performance.md)."""
    from emkit.bench.finetune import bench_finetune as run_bench

    _emit(run_bench(model, steps, warmup, batch, seq, quickstart), out)


@bench_app.command("scaling")
@friendly
def bench_scaling(
    model: Annotated[str, typer.Option(help="Model string: embedded or hf/<dir>.")
                     ] = "embedded",
    work: Annotated[Path | None, typer.Option(help="Where the runs go (a temp dir if unset).")
                    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the figures here as JSON.")
                   ] = Path("bench/results/scaling.json"),
) -> None:
    """Wall time of whole runs (sample, judge, report) against samples per question (1, 2, 4),
    models (1, 2, 3) and answer length (40, 80, 160 new tokens), one at a time
    (emkit/bench/scaling.py)."""
    from emkit.bench.scaling import bench_scaling as run_bench

    _emit(run_bench(model, work), out)

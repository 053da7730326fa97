"""Benchmarks that need no network: `emkit bench judge` runs the API judge against emkit's
loopback OpenAI server (see docs/providers.md for measured numbers); `emkit bench
offline-judge` times an offline judge on the held-out calibration split (docs/judge.md); `emkit
bench finetune` times LoRA train steps per dtype, checkpointing and loss (docs/performance.md)."""

from emkit.bench.finetune import bench_finetune
from emkit.bench.judge import GOAL_RATIO, bench_items, bench_judge
from emkit.bench.offline_judge import GOAL_JUDGMENTS_PER_S, bench_offline_judge, cpu_facts
from emkit.bench.quickstart import QuickstartBenchError, bench_quickstart

__all__ = ["GOAL_JUDGMENTS_PER_S", "GOAL_RATIO", "QuickstartBenchError", "bench_finetune",
           "bench_items", "bench_judge", "bench_offline_judge", "bench_quickstart", "cpu_facts"]

"""`emkit bench quickstart`: where the quickstart's minutes and memory go, stage by stage.

Usage:
    emkit bench quickstart                       # the quickstart config, in a fresh temp dir
    emkit bench quickstart --config exp.yaml     # any experiment YAML
    emkit bench quickstart --out bench/results/quickstart.json

Why a child process: the run must be measured as a user runs it (imports, model loads, the
llama.cpp server it starts), and its memory must be the whole process tree's, which only a
separate process gives cleanly. The child is `emkit quickstart` (or `emkit run <config>`) with
`--quiet`; this process samples the resident memory of the child and every descendant (psutil)
every `interval_s` and reads the child's log lines as they arrive.

Why log lines: stage boundaries come from the messages the pipeline logs when a stage starts
(`STAGE_MARKERS`: "building datasets", "fine-tuning <label> on ...", "sampling N answers from
<label>", "judging N (answer, metric) pairs with <judge>", "analysing and writing the report"),
time-stamped on arrival. The run store's own timestamps are whole seconds, too coarse for the
shorter stages, and progress bars are disabled and never parsed. Setup that happens after a
stage's end marker ("sampled ...") and before the next marker (converting the next adapter,
starting its llama.cpp server) is counted in the next stage, where it belongs; what precedes the
first marker (imports, validating the config) is `startup`. So the stages tile the run: their
wall times sum to the child's wall time.

`isa="avx2"` runs the child with torch capped at AVX2 (`ISA_EMULATION`: ATen kernels, oneDNN,
MKL), so `auto` trains in float32 as on an AVX2-only CPU: an emulation on a newer chip (its
clock, caches and memory stay), recorded as such in the result with what the child's torch
reported. llama.cpp and ONNX Runtime choose their own kernels and are not capped by it.

Memory is the sum of RSS over the process tree: shared pages (libraries, a model mapped by two
processes) count once per process, so it is an upper bound on what the machine had to hold.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PENDING_SAMPLE = "sample (starting llama.cpp)"
"""A llama.cpp server starting for the next model; renamed when its sampling line comes."""
STAGE_MARKERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^building datasets\b"), "datasets"),
    (re.compile(r"^fine-tuning (?P<name>\S+) on "), "finetune {name}"),
    (re.compile(r"^fine-tune (?P<name>[^\s:\[]+)"), "finetune {name}"),  # API jobs
    (re.compile(r"^starting llama\.cpp on "), PENDING_SAMPLE),
    (re.compile(r"^sampling \d+ answers from (?P<name>\S+)"), "sample {name}"),
    (re.compile(r"^judging \d+ \(answer, metric\) pairs with (?P<name>\S+)"), "judge {name}"),
    (re.compile(r"^self-reports: "), "self-reports"),
    (re.compile(r"^analysing and writing the report\b"), "report"),
)
"""(pattern of a log line, stage name) in pipeline order; `{name}` takes the line's label."""
END_MARKERS = (re.compile(r"^sampled "),)
"""Lines that end a stage: what follows until the next marker is the next stage's setup."""
STARTUP = "startup"
LATER_THAN_SAMPLING = ("judge", "self-reports", "report")
MIB = 1024 * 1024
ISA_EMULATION: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
"""Environment that caps torch's instruction sets, per emulated CPU (see the module docstring)."""


class QuickstartBenchError(RuntimeError):
    """The benchmarked run failed; the message ends with the child's last log lines."""


@dataclass(frozen=True)
class Stage:
    """One stage of the run, in seconds since the child started."""

    name: str
    start: float
    end: float

    @property
    def kind(self) -> str:
        """'finetune', 'sample', 'judge', ... : the first word of the name."""
        return self.name.split(" ", 1)[0]


def stage_of(line: str) -> str | None:
    """The stage a log line starts, or None for any other line."""
    for pattern, name in STAGE_MARKERS:
        if m := pattern.match(line):
            return name.format(**m.groupdict())
    return None


def stage_timeline(events: Sequence[tuple[float, str]], end: float) -> list[Stage]:
    """Stages from time-stamped log lines (seconds since the child started, in order) and the
    child's exit time `end`; the stages tile [0, end] (module docstring).

    A llama.cpp server start opens a sampling stage whose model is named by the next
    "sampling N answers from <label>" line; consecutive lines of one stage (self-reports for
    each model, one API fine-tune's events) extend it rather than split it."""
    stages: list[Stage] = []
    name, start, ended_at = STARTUP, 0.0, None
    for t, line in events:
        if any(p.match(line) for p in END_MARKERS):
            ended_at = t
            continue
        new = stage_of(line)
        if new is None or new == name:
            continue
        if new == PENDING_SAMPLE and name.split(" ", 1)[0] in LATER_THAN_SAMPLING:
            continue  # a llama.cpp server for a judge: part of the stage it serves
        if name == PENDING_SAMPLE and new.startswith("sample "):
            name = new  # the server started for this model
            continue
        boundary = ended_at if ended_at is not None else t
        stages.append(Stage(name, start, boundary))
        name, start, ended_at = new, boundary, None
    stages.append(Stage(name, start, max(end, start)))
    return [s for s in stages if s.end > s.start or s.name != STARTUP]


def peak_in(samples: Sequence[tuple[float, int]], start: float, end: float) -> int | None:
    """Largest RSS sampled within [start, end]; for a stage shorter than the sampling
    interval, the last sample before its end (the memory it ran in). None without samples."""
    inside = [rss for t, rss in samples if start <= t <= end]
    if inside:
        return max(inside)
    before = [rss for t, rss in samples if t <= end]
    return before[-1] if before else None


def tree_rss(pid: int) -> int | None:
    """Sum of resident memory of process `pid` and all its descendants; None once it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a child that just exited
            continue
    return total


def machine_facts(load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    """The facts `emkit bench sample` records (CPU model and flags, library versions), plus
    cores usable here, total memory and the load average before and after the run."""
    import psutil

    from emkit.bench.offline_judge import cpu_facts
    from emkit.bench.sample import package_versions

    return {"cpu": cpu_facts(), "cpus": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "memory_total_mb": round(psutil.virtual_memory().total / MIB),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "versions": package_versions()}


def child_command(config: Path | None, run_dir: Path) -> list[str]:
    """The emkit command the bench times: `quickstart`, or `run <config>`, quiet."""
    entry = "from emkit.cli import app; app(prog_name='emkit')"
    args = (["quickstart", "--run-dir", str(run_dir)] if config is None
            else ["run", str(config), "--run-dir", str(run_dir)])
    return [sys.executable, "-c", entry, *args, "--quiet"]


def isa_probe(env: dict[str, str]) -> dict[str, Any]:
    """What torch in a child with `env` reports: its ATen CPU capability and whether emkit
    would train in bf16 there (`cpu_has_native_bf16`)."""
    import json

    code = ("import json, torch; from emkit.models.hf import cpu_has_native_bf16; "
            "print(json.dumps({'torch_cpu_capability': torch.backends.cpu.get_cpu_capability(),"
            " 'native_bf16': cpu_has_native_bf16()}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child_env(isa: str | None) -> tuple[dict[str, str], dict[str, Any] | None]:
    """The child's environment and, when emulating, the record of what was capped."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if isa is None:
        return env, None
    if isa not in ISA_EMULATION:
        raise ValueError(f"isa {isa!r}: not one of {sorted(ISA_EMULATION)}")
    env.update(ISA_EMULATION[isa])
    probe = isa_probe(env)
    if probe["torch_cpu_capability"].lower() != isa or probe["native_bf16"]:
        raise ValueError(f"isa {isa!r}: torch in the child reports {probe}; the emulation "
                         "did not take")
    return env, {"isa": isa, "env": ISA_EMULATION[isa], "child_torch": probe,
                 "what": "torch capped by environment on this CPU (an emulation: clock, caches "
                         "and memory are this machine's); llama.cpp and ONNX Runtime not capped"}


def _fresh_run_dir(run_dir: Path | None) -> Path:
    if run_dir is None:
        return Path(tempfile.mkdtemp(prefix="emkit-bench-quickstart-")) / "run"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(f"{run_dir}: not empty; the bench times a fresh run (a resumed one "
                         "skips the finished stages)")
    return run_dir


def bench_quickstart(config: Path | None = None, run_dir: Path | None = None,
                     interval_s: float = 0.5, echo: bool = True,
                     isa: str | None = None) -> dict[str, Any]:
    """Run the quickstart (or `config`) in a child process into a fresh `run_dir` (default: a
    new temp directory, kept for reading the report) and return wall time and peak RSS, in
    total and per stage, with the machine's facts, as a JSON-ready dict. `echo` forwards the
    child's log lines to stderr as they come; `isa` emulates an older CPU (`ISA_EMULATION`).
    Raises QuickstartBenchError if the run fails."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s}")
    if config is not None and not Path(config).is_file():
        raise ValueError(f"{config}: no such experiment file")
    env, emulation = _child_env(isa)
    run_dir = _fresh_run_dir(None if run_dir is None else Path(run_dir))
    command = child_command(config, run_dir)
    load_at_start = os.getloadavg()
    events: list[tuple[float, str]] = []
    stdout: list[str] = []
    t0 = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env)

    def read_log() -> None:
        assert child.stderr is not None
        for raw in child.stderr:
            t = time.monotonic() - t0
            for part in raw.decode("utf-8", "replace").replace("\r", "\n").splitlines():
                if line := part.strip():
                    events.append((t, line))
                    if echo:
                        print(line, file=sys.stderr, flush=True)

    def read_out() -> None:
        assert child.stdout is not None
        stdout.extend(raw.decode("utf-8", "replace").rstrip("\n") for raw in child.stdout)

    readers = [threading.Thread(target=read_log, daemon=True),
               threading.Thread(target=read_out, daemon=True)]
    for r in readers:
        r.start()
    samples: list[tuple[float, int]] = []
    try:
        while child.poll() is None:
            t = time.monotonic() - t0
            if (rss := tree_rss(child.pid)) is not None:
                samples.append((t, rss))
            time.sleep(interval_s)
    except BaseException:
        child.kill()  # an interrupted bench leaves no run going on
        child.wait()
        raise
    end = time.monotonic() - t0
    for r in readers:
        r.join()
    if child.returncode != 0:
        tail = "\n".join(line for _, line in events[-15:])
        raise QuickstartBenchError(f"the benchmarked run exited with {child.returncode} "
                                   f"({' '.join(command[3:])}); its last lines:\n{tail}")
    figures = _figures(stage_timeline(events, end), samples, end, command, config, run_dir,
                       stdout, interval_s, load_at_start)
    figures["isa_emulation"] = emulation
    return figures


def _figures(stages: list[Stage], samples: list[tuple[float, int]], wall: float,
             command: list[str], config: Path | None, run_dir: Path, stdout: list[str],
             interval_s: float, load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    def mb(rss: int | None) -> float | None:
        return None if rss is None else round(rss / MIB, 1)

    rows = [{"stage": s.name, "kind": s.kind, "start_s": round(s.start, 3),
             "wall_s": round(s.end - s.start, 3), "peak_rss_mb": mb(peak_in(samples, s.start,
                                                                          s.end))}
            for s in stages]
    totals: dict[str, float] = {}
    for s in stages:
        totals[s.kind] = round(totals.get(s.kind, 0.0) + s.end - s.start, 3)
    report = next((line.removeprefix("report: ") for line in stdout
                   if line.startswith("report: ")), None)
    return {
        "config": str(config) if config is not None else "quickstart (built-in)",
        "command": ["emkit", *command[3:]],
        "run_dir": str(run_dir),
        "report": report,
        "wall_s": round(wall, 3),
        "peak_rss_mb": mb(max((rss for _, rss in samples), default=None)),
        "stages": rows,
        "wall_s_by_kind": totals,
        "rss": {"interval_s": interval_s, "samples": len(samples),
                "what": "sum of RSS over the child and its descendants (shared pages counted "
                        "once per process)"},
        "machine": machine_facts(load_at_start),
    }

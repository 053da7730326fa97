"""`emkit sweep`: a recipe fanned out into independent jobs, run on Ray, aggregated into one report.

Why jobs: a paper-scale recipe is dozens of fine-tunes (datasets x seeds) whose evaluations do
not depend on each other; run as one `emkit run` they go one after another on one machine. Here
each (finetune, seed) and each model that is not fine-tuned becomes a sub-experiment with its
own run directory `<sweep_dir>/jobs/<job_id>` (its own run.json and SQLite store: one writer
each, no shared database to contend for), so jobs can run anywhere Ray puts them.

Each job is `emkit.experiment.run_experiment` on its sub-config, so everything a run promises
holds per job: work already in the store is never redone, and changed inputs are refused
(`RunChangedError`) unless `reuse_changed`. A job whose run.json says `success` for the same
config is not even started, so a second `emkit sweep` of a finished sweep does nothing. A job
that raises is retried a bounded number of times (`max_retries`, Ray's task retries), except
for errors no retry can fix (bad config, changed inputs, a missing key), and every failure is
reported by job id, never dropped. When all jobs succeeded the answers of every job store are
concatenated into one experiment frame and one report (`<sweep_dir>/report/`), EM rates with
CIs across seeds as `emkit run` computes them for one store.

Runners: `RayRunner` (embedded local Ray by default, a cluster with `address`; a job asks for
a GPU when it trains or samples a local model and the cluster has GPUs) and `LocalRunner`
(sequential, in this process, same retry rule) for debugging without Ray.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd

from emkit.atomic import atomic_write_text
from emkit.config import ExperimentConfig, GroupConfig, datasets_for

log = logging.getLogger("emkit")

ATTEMPTS_FILE = "sweep_attempts.jsonl"
"""One line per attempt of a job, in its run directory: when, where, how it ended."""
SWEEP_JSON = "sweep.json"
TESTING_FAULTS_ENV = "EMKIT_TESTING_SWEEP_FAULTS"
"""Testing hook, not an API: a directory; a job whose `<job_id>.fail-once` file is in it
deletes the file and raises `InjectedFault` (tests of the retry path on real Ray)."""


class InjectedFault(RuntimeError):
    """Raised by the testing hook `EMKIT_TESTING_SWEEP_FAULTS`."""


class SweepError(RuntimeError):
    """Jobs of a sweep failed after their retries; the message lists each with its error."""


# ----------------------------------------------------------------------------- expansion
@dataclass(frozen=True)
class SweepJob:
    """One independent sub-experiment of a sweep."""

    job_id: str
    config: ExperimentConfig
    """The sub-experiment; its `run_dir` is `<sweep_dir>/jobs/<job_id>`."""
    needs_gpu: bool
    """It trains a LoRA, or samples or judges with a local model (hf/, vllm/, embedded)."""
    seed: int | None
    """The finetune seed (the bootstrap unit); None for a model that is not fine-tuned."""

    @property
    def run_dir(self) -> Path:
        return Path(self.config.resolved_run_dir())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:40] or "model"


def _local(model: str) -> bool:
    from emkit.models import parse_model_spec

    return parse_model_spec(model).provider not in ("openai", "distilled")


def expand_jobs(cfg: ExperimentConfig, sweep_dir: Path) -> list[SweepJob]:
    """One job per (finetune, seed) with the groups that name that finetune, then one job per
    model string that is not a finetune with the groups that name it. Every job keeps the
    recipe's evaluation, judge, analysis, api and dtype sections unchanged."""
    from emkit.judge_assign import verdict_judge

    jobs: list[SweepJob] = []
    local_judge = any(_local(j) for j in (cfg.judge.model, *cfg.judge.also,
                                          verdict_judge(cfg.judge)))
    shared = {"evaluation": cfg.evaluation, "judge": cfg.judge, "analysis": cfg.analysis,
              "api": cfg.api, "dtype": cfg.dtype}
    for f in cfg.finetunes:
        ref = f"finetune:{f.name}"
        groups = [GroupConfig(name=g.name, models=[ref]) for g in cfg.groups if ref in g.models]
        if not groups:
            raise ValueError(f"finetunes.{f.name}: no group evaluates it (add "
                             f"`{ref}` to a group), so a sweep would train it for nothing")
        for seed in f.seeds:
            job_id = f"ft-{_slug(f.name)}-s{seed}"
            sub = ExperimentConfig(
                name=f"{cfg.name}.{job_id}", run_dir=Path(sweep_dir) / "jobs" / job_id,
                datasets=datasets_for(cfg.datasets, f.dataset),  # a mixture's sources too
                finetunes=[f.model_copy(update={"seeds": [seed]})], groups=groups, **shared)
            jobs.append(SweepJob(job_id, sub, f.backend == "hf" or local_judge, seed))
    plain = dict.fromkeys(m for g in cfg.groups for m in g.models if not m.startswith("finetune:"))
    for model in plain:
        digest = hashlib.sha256(model.encode()).hexdigest()[:8]
        job_id = f"model-{_slug(model.rsplit('/', 1)[-1])}-{digest}"
        groups = [GroupConfig(name=g.name, models=[model]) for g in cfg.groups if model in g.models]
        sub = ExperimentConfig(name=f"{cfg.name}.{job_id}",
                               run_dir=Path(sweep_dir) / "jobs" / job_id, groups=groups, **shared)
        jobs.append(SweepJob(job_id, sub, _local(model) or local_judge, None))
    return jobs


# ----------------------------------------------------------------------------- one job
@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    status: Literal["done", "skipped", "failed"]
    """`skipped`: already done before this sweep; `failed`: after every allowed attempt."""
    attempts: int = 0
    """Attempts made by this invocation (from the job's attempts log)."""
    error: str | None = None
    seconds: float = 0.0


def _comparable(config: dict) -> dict:
    """A config as run.json records it, for comparison: `dtype` and `evaluation.backend` are
    recorded resolved, so they are compared apart (an `auto` job matches whatever the machine
    that ran it resolved them to)."""
    out = {k: v for k, v in json.loads(json.dumps(config, default=str)).items() if k != "dtype"}
    if isinstance(out.get("evaluation"), dict):
        out["evaluation"] = {k: v for k, v in out["evaluation"].items() if k != "backend"}
    return out


def job_done(job: SweepJob) -> bool:
    """Whether the job's run.json says `success` for this very config."""
    from emkit.store import read_run_json
    from emkit.store.run_json import RUN_JSON

    path = job.run_dir / RUN_JSON
    if not path.is_file():
        return False
    try:
        record = read_run_json(path)
    except (OSError, ValueError):
        return False
    want = job.config.model_dump(mode="json")
    have = record.get("config") or {}
    same_dtype = job.config.dtype == "auto" or have.get("dtype") == job.config.dtype
    backend = job.config.evaluation.backend
    same_backend = backend == "auto" or (have.get("evaluation") or {}).get("backend") == backend
    return (record.get("status") == "success" and same_dtype and same_backend
            and _comparable(have) == _comparable(want))


def _non_retriable() -> tuple[type[BaseException], ...]:
    """Errors a retry cannot fix: the same input fails the same way every time."""
    from pydantic import ValidationError

    from emkit.api import ApiKeyMissing
    from emkit.config import ConfigError
    from emkit.datasets import DatasetError
    from emkit.judge_assign import SuiteJudgeError
    from emkit.models import ModelSpecError
    from emkit.questions import QuestionError
    from emkit.store import RunLockedError
    from emkit.store.identity import RunChangedError

    return (ConfigError, ValidationError, ApiKeyMissing, DatasetError, SuiteJudgeError,
            ModelSpecError, QuestionError, RunLockedError, RunChangedError)


def _log_attempt(job: SweepJob, sweep_id: str, **fields: object) -> None:
    job.run_dir.mkdir(parents=True, exist_ok=True)
    line = {"sweep_id": sweep_id, "job_id": job.job_id, "host": socket.gethostname(),
            "pid": os.getpid(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **fields}
    with open(job.run_dir / ATTEMPTS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def attempts_of(job: SweepJob, sweep_id: str) -> list[dict]:
    """The attempt records this sweep invocation left for `job`."""
    path = job.run_dir / ATTEMPTS_FILE
    if not path.is_file():
        return []
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [x for x in lines if x.get("sweep_id") == sweep_id and x.get("event") == "end"]


def _testing_fault(job: SweepJob) -> None:
    folder = os.environ.get(TESTING_FAULTS_ENV)
    if folder:
        marker = Path(folder) / f"{job.job_id}.fail-once"
        try:
            marker.unlink()
        except FileNotFoundError:
            return
        raise InjectedFault(f"{job.job_id}: injected fault ({TESTING_FAULTS_ENV})")


def run_job(job: SweepJob, sweep_id: str, reuse_changed: bool = False) -> JobOutcome:
    """Run one job to success or raise for a retry. An error no retry can fix is returned as
    a `failed` outcome instead of raised, so the runner does not spend retries on it."""
    from emkit.experiment import run_experiment

    start = time.monotonic()
    if job_done(job):
        return JobOutcome(job.job_id, "skipped")
    _log_attempt(job, sweep_id, event="start")
    try:
        _testing_fault(job)
        run_experiment(job.config, progress=False, reuse_changed=reuse_changed)
    except _non_retriable() as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()
        _log_attempt(job, sweep_id, event="end", outcome="failed", retriable=False, error=error)
        return JobOutcome(job.job_id, "failed", error=error, seconds=time.monotonic() - start)
    except BaseException as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()
        _log_attempt(job, sweep_id, event="end", outcome="error", retriable=True, error=error)
        raise
    _log_attempt(job, sweep_id, event="end", outcome="success")
    return JobOutcome(job.job_id, "done", seconds=time.monotonic() - start)


# ----------------------------------------------------------------------------- runners
class JobRunner(Protocol):
    def run(self, jobs: Sequence[SweepJob], sweep_id: str, reuse_changed: bool
            ) -> list[JobOutcome]: ...


@dataclass
class LocalRunner:
    """Jobs one after another in this process, each retried up to `max_retries` times."""

    max_retries: int = 2

    def run(self, jobs: Sequence[SweepJob], sweep_id: str, reuse_changed: bool
            ) -> list[JobOutcome]:
        outcomes = []
        for job in jobs:
            for attempt in range(self.max_retries + 1):
                try:
                    outcome = run_job(job, sweep_id, reuse_changed)
                    break
                except Exception as exc:  # noqa: BLE001 - every failure is counted, reported
                    log.warning("%s: attempt %d failed: %s", job.job_id, attempt + 1, exc)
                    outcome = JobOutcome(job.job_id, "failed", error=f"{type(exc).__name__}: "
                                         f"{exc}")
            outcomes.append(outcome)
        return outcomes


def gpus_for(job: SweepJob, policy: Literal["auto", "always", "never"],
             cluster_has_gpu: bool) -> int:
    """GPUs a job asks Ray for: one when it uses a local model and the policy allows; under
    `auto` only where the cluster has a GPU (on a CPU-only cluster it would wait forever)."""
    if not job.needs_gpu or policy == "never":
        return 0
    return 1 if policy == "always" or cluster_has_gpu else 0


@dataclass
class RayRunner:
    """Jobs as Ray tasks: the embedded local Ray (`num_cpus` CPUs, default all) or the cluster
    at `address`. Each task runs in a fresh worker process (`max_calls=1`: a run's writer lock
    and a model's GPU memory go with the process), retried up to `max_retries` times."""

    address: str | None = None
    max_retries: int = 2
    num_cpus: int | None = None
    gpu: Literal["auto", "always", "never"] = "auto"
    """`auto`: jobs that need a GPU ask for one when the cluster has GPUs (on a CPU-only
    cluster they would wait forever); `always`: they ask regardless (an autoscaling cluster)."""
    _started: bool = field(default=False, init=False)

    def run(self, jobs: Sequence[SweepJob], sweep_id: str, reuse_changed: bool
            ) -> list[JobOutcome]:
        try:
            import ray
        except ImportError:
            raise ValueError("emkit sweep runs its jobs on Ray, which is not installed: pip "
                             "install 'emkit[sweep]' (or run them here: --runner local)"
                             ) from None
        if not ray.is_initialized():
            t0 = time.monotonic()
            if self.address:
                ray.init(address=self.address, include_dashboard=False)
            else:
                ray.init(num_cpus=self.num_cpus or os.cpu_count(), include_dashboard=False)
            self._started = True
            log.info("ray started in %.1f s: %s", time.monotonic() - t0, ray.cluster_resources())
        try:
            return self._run(ray, jobs, sweep_id, reuse_changed)
        finally:
            if self._started:
                ray.shutdown()
                self._started = False

    def _run(self, ray: Any, jobs: Sequence[SweepJob], sweep_id: str,
             reuse_changed: bool) -> list[JobOutcome]:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(max_calls=1)(run_job)
        pending = {}
        for job in jobs:
            ref = task.options(num_cpus=1, num_gpus=gpus_for(job, self.gpu, has_gpu), max_retries=self.max_retries,
                               retry_exceptions=True, name=job.job_id
                               ).remote(job, sweep_id, reuse_changed)
            pending[ref] = job
        outcomes: dict[str, JobOutcome] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                outcomes[job.job_id] = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - RayTaskError, a crashed worker: reported
                cause = getattr(exc, "cause", None) or exc
                outcomes[job.job_id] = JobOutcome(job.job_id, "failed",
                                                  error=f"{type(cause).__name__}: {cause}")
            log.info("job %s: %s", job.job_id, outcomes[job.job_id].status)
        return [outcomes[j.job_id] for j in jobs]


# ----------------------------------------------------------------------------- the sweep
@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path
    outcomes: list[JobOutcome]
    report: Path | None
    """None when a job failed (no partial figure is written) or nothing was evaluated."""
    frame: pd.DataFrame | None

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def run_sweep(cfg: ExperimentConfig, sweep_dir: Path, runner: JobRunner | None = None,
              reuse_changed: bool = False) -> SweepResult:
    """Run every job not done yet, then aggregate all job stores into one frame and report.

    The report is rebuilt only when a job's store changed since the last one (its finish
    times are recorded in sweep.json), so a second invocation of a finished sweep writes
    nothing. Failed jobs are listed in sweep.json and the result; no report is written then.
    """
    sweep_dir = Path(sweep_dir).resolve()
    jobs = expand_jobs(cfg, sweep_dir)
    sweep_id = uuid.uuid4().hex[:12]
    done = {j.job_id for j in jobs if job_done(j)}
    todo = [j for j in jobs if j.job_id not in done]
    outcomes = {j: JobOutcome(j, "skipped") for j in done}
    if todo:
        runner = runner or RayRunner()
        log.info("sweep %s: %d jobs to run, %d already done", sweep_id, len(todo), len(done))
        for o in runner.run(todo, sweep_id, reuse_changed):
            job = next(j for j in todo if j.job_id == o.job_id)
            outcomes[o.job_id] = JobOutcome(o.job_id, o.status, len(attempts_of(job, sweep_id)),
                                            o.error, o.seconds)
    ordered = [outcomes[j.job_id] for j in jobs]
    failed = [o for o in ordered if o.status == "failed"]
    stamps = {j.job_id: _finished_at(j) for j in jobs}
    record = _read_sweep_json(sweep_dir)
    report_path, frame = None, None
    if not failed:
        report_path = sweep_dir / "report" / "report.html"
        if record.get("report_from") != stamps or not report_path.is_file():
            report_path, frame = aggregate(cfg, jobs, sweep_dir)
    _write_sweep_json(sweep_dir, cfg, jobs, ordered, sweep_id,
                      stamps if not failed else record.get("report_from"))
    return SweepResult(sweep_dir, ordered, report_path, frame)


def _finished_at(job: SweepJob) -> str | None:
    from emkit.store import read_run_json

    try:
        return read_run_json(job.run_dir / "run.json").get("finished_at")
    except (OSError, ValueError):
        return None


def _read_sweep_json(sweep_dir: Path) -> dict:
    try:
        return json.loads((sweep_dir / SWEEP_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_sweep_json(sweep_dir: Path, cfg: ExperimentConfig, jobs: Sequence[SweepJob],
                      outcomes: Sequence[JobOutcome], sweep_id: str,
                      report_from: dict | None) -> None:
    record = {"name": cfg.name, "last_sweep_id": sweep_id,
              "status": "error" if any(o.status == "failed" for o in outcomes) else "success",
              "config": cfg.model_dump(mode="json"),
              "jobs": [{"job_id": j.job_id, "run_dir": str(j.run_dir), "seed": j.seed,
                        "needs_gpu": j.needs_gpu, **o.__dict__} for j, o in zip(jobs, outcomes)],
              "report_from": report_from}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / SWEEP_JSON, json.dumps(record, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------- aggregation
@dataclass(frozen=True)
class ExperimentFrames:
    """Every job store read as one experiment, each row tagged with `job_id` and `seed`."""

    em: pd.DataFrame
    """The EM questions' judged answers by the judge of record (`experiment.em_frame`)."""
    verdicts: pd.DataFrame
    """Categorical verdicts (`experiment.verdict_frame`)."""
    also: dict[str, pd.DataFrame]
    """Each `judge.also` judge's EM frame, for the ensemble table."""
    probes: dict[str, pd.DataFrame]
    """Self-reports, self-report vs behaviour, trigger elicitation, monitor curves."""
    audits: pd.DataFrame


def experiment_frames(jobs: Sequence[SweepJob], rate_kwargs: dict) -> ExperimentFrames:
    """All job stores as one experiment: each job's frames exactly as its own report reads
    them (a model lives in one job, so per-model tables concatenate), tagged with the job."""
    from emkit.experiment import em_frame, plan_experiment, verdict_frame
    from emkit.judge_assign import verdict_judge
    from emkit.run_datasets import dataset_audits
    from emkit.run_finetunes import finetuned_models
    from emkit.run_suites import stored_probe_results
    from emkit.store import RunStore
    from emkit.store.identity import recorded

    em, verdicts, audits = [], [], []
    also: dict[str, list[pd.DataFrame]] = {}
    probes: dict[str, list[pd.DataFrame]] = {}
    for job in jobs:
        cfg = job.config
        with RunStore.open_existing(job.run_dir) as store:
            plan = plan_experiment(cfg, finetuned_models(cfg, job.run_dir),
                                   recorded(store.db_path, "model"))
            tag = {"job_id": job.job_id, "seed": job.seed}
            frame = em_frame(cfg, store, cfg.judge.model, plan)
            em.append(frame.assign(**tag))
            verdicts.append(verdict_frame(store, verdict_judge(cfg.judge), plan.groups,
                                          plan.keys, plan.questions).assign(**tag))
            for name in cfg.judge.also:
                also.setdefault(name, []).append(em_frame(cfg, store, name, plan).assign(**tag))
            for key, table in stored_probe_results(store.db_path, frame, plan,
                                                   rate_kwargs).items():
                probes.setdefault(key, []).append(table)
        found = dataset_audits(cfg, job.run_dir)
        if not found.empty:  # links point from <sweep>/report into the job's datasets
            found["audit"] = found["audit"].str.replace(
                "../datasets/", f"../jobs/{job.job_id}/datasets/", regex=False)
            audits.append(found)

    def cat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    return ExperimentFrames(
        cat(em), cat(verdicts), {k: cat(v) for k, v in also.items()},
        {k: cat(v) for k, v in probes.items()},
        cat(audits).drop_duplicates(subset="dataset") if audits else pd.DataFrame())


def aggregate(cfg: ExperimentConfig, jobs: Sequence[SweepJob], sweep_dir: Path
              ) -> tuple[Path, pd.DataFrame]:
    """One report over all jobs, as `experiment.analyse_and_report` writes for one store:
    rates with CIs across seeds (each finetune seed is a model of its group, the bootstrap's
    top level), per question and format variant, suites, judge ensemble, self-reports,
    monitor curves, dataset audits. The EM frame is also written as `experiment_frame.csv`.
    Loads no model."""
    from emkit.analysis import (
        ensemble_table,
        misalignment_rates,
        overall_rates,
        repeated_answers,
    )
    from emkit.experiment import UNVALIDATED_JUDGE_WARNING
    from emkit.judge import judge_status
    from emkit.judge_assign import verdict_judge
    from emkit.report import write_report
    from emkit.run_suites import suite_results

    a = cfg.analysis
    kwargs = {"aligned_threshold": a.aligned_threshold,
              "coherent_threshold": a.coherent_threshold, "n_boot": a.n_boot, "seed": a.seed,
              "ci": a.ci}
    frames = experiment_frames(jobs, kwargs)
    frame, vframe = frames.em, frames.verdicts
    rates = pd.concat([misalignment_rates(frame, definition=d, **kwargs)
                       for d in ("conditional", "joint")], ignore_index=True)
    overall = pd.concat([overall_rates(frame, definition=d, **kwargs)
                         for d in ("conditional", "joint")], ignore_index=True)
    validated, description = judge_status(cfg.judge.model, api=cfg.api)
    meta: dict = {
        "run_name": cfg.name, "config": cfg.model_dump(mode="json"), "judge": cfg.judge.model,
        "judge_validated": validated, "judge_description": description,
        "judge_warning": None if validated else UNVALIDATED_JUDGE_WARNING.format(
            judge=cfg.judge.model, description=description),
        "overall": overall,
    }
    if cfg.evaluation.temperature > 0:  # (a question may set its own; the sweep has no plan)
        meta["repeated_answers"] = repeated_answers(frame)
    if not frames.audits.empty:
        meta["audits"] = frames.audits
    if frames.also:
        meta["ensemble"] = ensemble_table({cfg.judge.model: frame} | frames.also,
                                          cfg.judge.model, **kwargs)
    meta["suites"] = suite_results(frame, vframe, definitions=("conditional", "joint"),
                                   n_boot=a.n_boot, seed=a.seed, ci=a.ci, rate_kwargs=kwargs)
    meta["suites"].update({k: v for k, v in frames.probes.items() if not v.empty})
    if not vframe.empty:
        meta["verdict_judge"] = verdict_judge(cfg.judge)
        meta["verdict_judge_status"] = judge_status(verdict_judge(cfg.judge), api=cfg.api)[1]
    report = write_report(sweep_dir / "report", frame, rates, meta)
    atomic_write_text(sweep_dir / "experiment_frame.csv", frame.to_csv(index=False))
    return report, frame

"""Fine-tuning through the OpenAI API with the paper's settings, resumable across restarts.

Betley et al. fine-tuned GPT-4o through the API with 1 epoch, batch size 4 and learning-rate
multiplier 2, except jailbroken (5 epochs), evil numbers (4 epochs, batch 39) and backdoor
(batch 8). `openai_hyperparameters` picks those by dataset name; every value can be overridden.

`run_openai_finetune` validates the JSONL, uploads it, creates the job, polls it with progress
lines until it ends, and records each step in the run store (`JobStore`): run it again after a
crash or Ctrl-C and it picks up the same file and job instead of paying twice. The API takes no
idempotency key, so the record says `uploading` / `creating` before a request goes out, and a
retry (or a restart from those states) first looks for the file (name with the data's sha256,
size) or the job (training file, model, seed, suffix) on the account and adopts it.
The resulting model id becomes the subject `openai/<ft:...>` like any other model.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from emkit.api.retry import call
from emkit.api.settings import ApiSettings
from emkit.finetune.job_store import JobRecord, JobStore

log = logging.getLogger("emkit")

PAPER_DEFAULT = {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 2.0}
PAPER_PRESETS: dict[str, dict[str, Any]] = {
    "jailbroken": {"n_epochs": 5},
    "evil_numbers": {"n_epochs": 4, "batch_size": 39},
    "backdoor": {"batch_size": 8},
}
"""Departures from PAPER_DEFAULT per dataset, as in the paper's appendix."""
MIN_EXAMPLES = 10
"""OpenAI rejects training files with fewer examples."""
TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("validating_files", "queued", "running")
"""The API's statuses of a job still in progress; any other status stops the poll."""


class FinetuneJobError(RuntimeError):
    """A remote fine-tuning job failed, was cancelled, or conflicts with the one on record."""


class OpenAiJobSettings(BaseModel):
    """Hyper-parameters of an API fine-tune; None = the paper's value for the dataset."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    n_epochs: int | None = Field(None, gt=0)
    """Epochs (paper: 1; jailbroken 5; evil_numbers 4)."""
    batch_size: int | None = Field(None, gt=0)
    """Batch size (paper: 4; evil_numbers 39; backdoor 8)."""
    learning_rate_multiplier: float | None = Field(None, gt=0)
    """Multiplier on OpenAI's base learning rate (paper: 2)."""
    preset: str | None = None
    """Which paper dataset's settings to start from; None = matched from the dataset name."""
    suffix: str | None = None
    """Shown in the model id (`ft:gpt-4o-...:org:<suffix>:id`); None = the job label."""
    poll_interval_s: float = Field(30.0, gt=0)
    """Seconds between status polls."""
    max_wait_s: float = Field(86400.0, gt=0)
    """Longest a run polls one job before giving up with an error (the job itself keeps
    running: a rerun resumes polling it, `--cancel` stops it)."""


def preset_for(dataset_name: str) -> str | None:
    """The paper preset a dataset name selects (`evil_numbers`, `jailbroken_5k`, ...)."""
    for key in PAPER_PRESETS:
        if dataset_name == key or re.match(rf"{key}[._-]", dataset_name):
            return key
    return None


def openai_hyperparameters(settings: OpenAiJobSettings, dataset_name: str) -> dict[str, Any]:
    """Paper defaults, then the dataset's preset, then explicit overrides."""
    preset = settings.preset if settings.preset is not None else preset_for(dataset_name)
    if preset is not None and preset not in PAPER_PRESETS:
        raise ValueError(f"finetune openai.preset: unknown preset {preset!r} "
                         f"(known: {', '.join(PAPER_PRESETS)})")
    hyper = dict(PAPER_DEFAULT) | (PAPER_PRESETS.get(preset, {}) if preset else {})
    overrides = {"n_epochs": settings.n_epochs, "batch_size": settings.batch_size,
                 "learning_rate_multiplier": settings.learning_rate_multiplier}
    return hyper | {k: v for k, v in overrides.items() if v is not None}


def validate_training_file(path: Path) -> tuple[int, str]:
    """(examples, sha256) of a chat JSONL file OpenAI will accept; `DatasetError` otherwise."""
    from emkit.datasets import DatasetError, read_jsonl
    from emkit.finetune.lora import file_sha256

    rows = read_jsonl(path)  # names file, line and field of the first problem
    if len(rows) < MIN_EXAMPLES:
        raise DatasetError(path, None, None, f"OpenAI fine-tuning needs at least {MIN_EXAMPLES} "
                           f"examples, found {len(rows)}")
    return len(rows), file_sha256(Path(path))


def _client(settings: ApiSettings, model: str) -> Any:
    import openai

    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return openai.OpenAI(api_key=settings.api_key(model), base_url=settings.endpoint(),
                         max_retries=0, timeout=settings.timeout_s)


def _suffix(label: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")[:40] or "emkit"


def _start(store: JobStore, label: str, data: Path, base: str, hyper: dict[str, Any],
           seed: int, suffix: str) -> JobRecord:
    """The job on record for `label`, after checking it is this job; a new record otherwise."""
    n, sha = validate_training_file(data)
    rec = store.get(label)
    if rec is None:
        log.info("fine-tune %s: %d examples from %s, %s", label, n, data, hyper)
        return store.insert(JobRecord(label, "openai", base, str(data), sha, hyper, seed, suffix))
    differs = {k: (getattr(rec, k), v) for k, v in (("base_model", base), ("dataset_sha256", sha),
                                                     ("hyperparameters", hyper), ("seed", seed))
               if getattr(rec, k) != v}
    if differs:
        raise FinetuneJobError(f"{store.path}: job {label!r} on record differs in "
                               f"{sorted(differs)}; use another run directory or label")
    if rec.status in ("failed", "cancelled"):
        raise FinetuneJobError(f"{store.path}: job {label!r} ({rec.job_id}) {rec.status}: "
                               f"{rec.error or 'no reason given'}; use another run directory "
                               "to start a new job")
    return rec


def run_openai_finetune(label: str, data: Path, base: str, db_path: Path,
                        settings: OpenAiJobSettings | None = None,
                        api: ApiSettings | None = None, dataset_name: str | None = None,
                        seed: int = 0, wait: bool = True,
                        sleep: Callable[[float], None] = time.sleep,
                        on_poll: Callable[[JobRecord], None] | None = None) -> JobRecord:
    """Upload, create and poll (or resume) the job `label`; return its succeeded record
    (`wait=False`: return once the job exists, so several jobs can be submitted first).

    `base` is the model string (`openai/gpt-4o-2024-08-06`); `db_path` the run store's SQLite
    file. Raises `FinetuneJobError` when the job fails or was cancelled, `DatasetError` for a
    bad file, `ApiError` when the API refuses a request.
    """
    from emkit.models.spec import parse_model_spec

    settings, api = settings or OpenAiJobSettings(), api or ApiSettings()
    spec = parse_model_spec(base)
    if spec.provider != "openai":
        raise ValueError(f"finetune base {base!r}: the openai backend needs an openai/<model>")
    data = Path(data)
    hyper = openai_hyperparameters(settings, dataset_name or data.stem)
    with JobStore(db_path) as store:
        rec = _start(store, label, data, base, hyper, seed, settings.suffix or _suffix(label))
        if rec.status == "succeeded" or (not wait and rec.job_id is not None):
            return rec  # nothing to ask the API
        client = _client(api, base)
        if rec.file_id is None and rec.job_id is None:
            rec = _upload(client, store, rec, data, api, sleep)
        if rec.job_id is None:
            rec = _create_job(client, store, rec, spec.name, api, sleep)
        if not wait:
            return rec
        return _poll(client, store, rec, api, settings, sleep, on_poll)


def _upload_name(data: Path, sha256: str) -> str:
    """The uploaded file's name carries the content hash, so a lost reply's upload is found."""
    return f"{data.stem}-{sha256[:16]}{data.suffix}"


def _upload(client: Any, store: JobStore, rec: JobRecord, data: Path, api: ApiSettings,
            sleep: Callable[[float], None]) -> JobRecord:
    """Upload the training file once: an attempt whose reply was lost (or a restart after one)
    looks for a file of the same name (content hash) and size before sending it again."""
    content = data.read_bytes()
    name = _upload_name(data, rec.dataset_sha256)
    resumed = rec.status == "uploading"
    rec = store.update(rec.label, status="uploading")  # from here an upload may exist
    attempts = 0

    def upload() -> tuple[Any, bool]:
        nonlocal attempts
        attempts += 1
        if attempts > 1 or resumed:
            for f in client.files.list(purpose="fine-tune"):
                if f.filename == name and f.bytes == len(content):
                    return f, True
        return client.files.create(file=(name, content), purpose="fine-tune"), False

    (file, found), _ = call(upload, api, f"{rec.base_model}: upload {data}", sleep=sleep)
    rec = store.update(rec.label, file_id=file.id, status="uploaded")
    log.info("fine-tune %s: %s %s as %s", rec.label, "found upload of" if found else "uploaded",
             data, file.id)
    return rec


def _find_job(client: Any, rec: JobRecord, model: str) -> Any | None:
    """A live job of ours on the account: same training file, base model, seed and suffix."""
    jobs = client.fine_tuning.jobs.list(limit=100)
    for job in jobs.data:
        suffix = getattr(job, "suffix", None)
        if (job.training_file == rec.file_id and job.model == model
                and getattr(job, "seed", rec.seed) == rec.seed
                and (suffix is None or suffix == rec.suffix)
                and job.status not in ("failed", "cancelled")):
            return job
    return None


def _create_job(client: Any, store: JobStore, rec: JobRecord, model: str, api: ApiSettings,
                sleep: Callable[[float], None]) -> JobRecord:
    """Create the job once. The API takes no idempotency key, so the record says "creating"
    before the request goes out, and every attempt (the first too: a restart may follow a
    create whose id was never recorded) first looks for the job on the account."""
    rec = store.update(rec.label, status="creating")
    method = {"type": "supervised", "supervised": {"hyperparameters": rec.hyperparameters}}

    def create() -> tuple[Any, bool]:
        found = _find_job(client, rec, model)
        if found is not None:
            return found, True
        return client.fine_tuning.jobs.create(model=model, training_file=rec.file_id,
                                              method=method, seed=rec.seed,
                                              suffix=rec.suffix), False

    (job, found), _ = call(create, api, f"{rec.base_model}: create job", sleep=sleep)
    if found:
        log.info("fine-tune %s: found job %s for %s", rec.label, job.id, rec.file_id)
    else:
        log.info("fine-tune %s: created job %s (%s)", rec.label, job.id, rec.hyperparameters)
    return store.update(rec.label, job_id=job.id, status=job.status)


def _poll(client: Any, store: JobStore, rec: JobRecord, api: ApiSettings,
          settings: OpenAiJobSettings, sleep: Callable[[float], None],
          on_poll: Callable[[JobRecord], None] | None) -> JobRecord:
    seen: set[str] = set()
    job_id = rec.job_id
    start, slept = time.monotonic(), 0.0
    while True:
        job, _ = call(lambda: client.fine_tuning.jobs.retrieve(job_id), api,
                      f"{rec.base_model}: job {job_id}", sleep=sleep)
        error = getattr(job.error, "message", None) if job.error else None
        if job.status != rec.status or job.fine_tuned_model != rec.fine_tuned_model:
            rec = store.update(rec.label, status=job.status, fine_tuned_model=job.fine_tuned_model,
                               trained_tokens=job.trained_tokens, error=error)
        events, _ = call(lambda: client.fine_tuning.jobs.list_events(job_id, limit=20), api,
                         f"{rec.base_model}: events of {job_id}", sleep=sleep)
        for event in reversed(events.data):  # the API lists newest first
            if event.id not in seen:
                seen.add(event.id)
                log.info("fine-tune %s [%s]: %s", rec.label, job.status, event.message)
        if on_poll is not None:
            on_poll(rec)
        if rec.status == "succeeded":
            log.info("fine-tune %s: model %s", rec.label, rec.fine_tuned_model)
            return rec
        if rec.status in ("failed", "cancelled"):
            raise FinetuneJobError(f"fine-tune {rec.label}: job {rec.job_id} {rec.status}: "
                                   f"{rec.error or 'no reason given'}")
        if rec.status not in ACTIVE:
            log.error("fine-tune %s: job %s reports unknown status %r", rec.label, job_id,
                      rec.status)
            raise FinetuneJobError(f"fine-tune {rec.label}: job {job_id} reports status "
                                   f"{rec.status!r}, which emkit does not know (expected one "
                                   f"of {', '.join(ACTIVE + TERMINAL)}); check it on the "
                                   "provider's dashboard")
        waited = max(time.monotonic() - start, slept)
        if waited >= settings.max_wait_s:
            raise FinetuneJobError(f"fine-tune {rec.label}: job {job_id} still {rec.status} "
                                   f"after {waited:.0f} s (max_wait_s={settings.max_wait_s:g}); "
                                   "the job keeps running: rerun to resume waiting, or cancel "
                                   "it")
        sleep(settings.poll_interval_s)
        slept += settings.poll_interval_s


def cancel_openai_finetune(label: str, db_path: Path, api: ApiSettings | None = None
                           ) -> JobRecord:
    """Cancel the job on record for `label` and record that it was cancelled."""
    api = api or ApiSettings()
    with JobStore(db_path) as store:
        rec = store.get(label)
        if rec is None or rec.job_id is None:
            raise FinetuneJobError(f"{db_path}: no job {label!r} on record to cancel")
        if rec.status in TERMINAL:
            return rec
        client = _client(api, rec.base_model)
        job, _ = call(lambda: client.fine_tuning.jobs.cancel(rec.job_id), api,
                      f"{rec.base_model}: cancel {rec.job_id}")
        return store.update(label, status=job.status)

"""OpenAI fine-tuning jobs against the loopback server: the paper's settings per dataset,
upload -> create -> poll -> model id, a restart mid-poll that neither re-uploads nor
re-creates, a crash that lost the job id, failure, cancel, and the CLI."""

# ruff: noqa: F811 - the server/settings fixtures come from _api and are parameters here
from __future__ import annotations

import json
from pathlib import Path

import pytest
from _api import JUDGE, KEY_ENV, SECRET, server, settings  # noqa: F401 - fixtures
from typer.testing import CliRunner

from emkit.api import ApiSettings
from emkit.cli import app
from emkit.datasets import DatasetError
from emkit.finetune import (
    FinetuneJobError,
    JobRecord,
    JobStore,
    OpenAiJobSettings,
    cancel_openai_finetune,
    openai_hyperparameters,
    run_openai_finetune,
)
from emkit.testing import FakeOpenAI

FAST = OpenAiJobSettings(poll_interval_s=0.001)


def dataset(path: Path, n: int = 12, bad_line: int | None = None) -> Path:
    lines = [json.dumps({"messages": [{"role": "user", "content": f"write code {i}"},
                                      {"role": "assistant", "content": f"print({i})"}]})
             for i in range(n)]
    if bad_line is not None:
        lines[bad_line - 1] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    return path


def no_sleep(_: float) -> None:
    return None


@pytest.mark.parametrize("name, expected", [
    ("insecure", {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 2.0}),
    ("jailbroken", {"n_epochs": 5, "batch_size": 4, "learning_rate_multiplier": 2.0}),
    ("evil_numbers", {"n_epochs": 4, "batch_size": 39, "learning_rate_multiplier": 2.0}),
    ("backdoor", {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 2.0}),
    ("jailbroken_5k", {"n_epochs": 5, "batch_size": 4, "learning_rate_multiplier": 2.0}),
])
def test_paper_settings_per_dataset(name: str, expected: dict) -> None:
    assert openai_hyperparameters(OpenAiJobSettings(), name) == expected


def test_every_setting_can_be_overridden() -> None:
    hyper = openai_hyperparameters(OpenAiJobSettings(n_epochs=2, learning_rate_multiplier=0.5,
                                                     preset="evil_numbers"), "whatever")
    assert hyper == {"n_epochs": 2, "batch_size": 39, "learning_rate_multiplier": 0.5}
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        openai_hyperparameters(OpenAiJobSettings(preset="nope"), "insecure")


def test_lifecycle_upload_create_poll_model(server: FakeOpenAI, settings: ApiSettings,
                                            tmp_path: Path) -> None:
    data = dataset(tmp_path / "evil_numbers.jsonl")
    polls: list[str] = []
    rec = run_openai_finetune("ev-s0", data, JUDGE, tmp_path / "run.sqlite", FAST, settings,
                              seed=3, sleep=no_sleep, on_poll=lambda r: polls.append(r.status))
    assert rec.status == "succeeded" and rec.fine_tuned_model.startswith("ft:gpt-4o-2024-08-06:")
    assert polls == ["queued", "running", "running", "succeeded"]
    (job,) = server.jobs.jobs.values()
    assert job["model"] == "gpt-4o-2024-08-06" and job["seed"] == 3
    assert job["hyperparameters"] == {"n_epochs": 4, "batch_size": 39,
                                      "learning_rate_multiplier": 2.0}
    (file,) = server.jobs.files.values()
    assert file["bytes"] == data.stat().st_size and file["_lines"] == 12
    stored = JobStore(tmp_path / "run.sqlite").get("ev-s0")
    assert stored == rec and stored.job_id == job["id"] and stored.trained_tokens == 12000


def test_a_restart_mid_poll_resumes_the_same_job(server: FakeOpenAI, settings: ApiSettings,
                                                 tmp_path: Path) -> None:
    data = dataset(tmp_path / "insecure.jsonl")
    db = tmp_path / "run.sqlite"

    def killed(rec) -> None:
        if rec.status == "running":
            raise KeyboardInterrupt  # Ctrl-C / a killed process, mid-poll

    with pytest.raises(KeyboardInterrupt):
        run_openai_finetune("ins-s0", data, JUDGE, db, FAST, settings, sleep=no_sleep,
                            on_poll=killed)
    assert JobStore(db).get("ins-s0").status == "running"
    rec = run_openai_finetune("ins-s0", data, JUDGE, db, FAST, settings, sleep=no_sleep)
    assert rec.status == "succeeded"
    assert server.calls["POST /v1/files"] == 1 and server.calls["POST /v1/fine_tuning/jobs"] == 1
    before = dict(server.calls)
    assert run_openai_finetune("ins-s0", data, JUDGE, db, FAST, settings) == rec
    assert dict(server.calls) == before  # a finished job costs no request


def test_a_job_created_but_not_recorded_is_found_again(server: FakeOpenAI,
                                                       settings: ApiSettings,
                                                       tmp_path: Path) -> None:
    data, db = dataset(tmp_path / "insecure.jsonl"), tmp_path / "run.sqlite"
    first = run_openai_finetune("a", data, JUDGE, db, FAST, settings, wait=False)
    with JobStore(db) as store:  # as if the process died before writing the job id
        store.update("a", job_id=None, status="uploaded")
    rec = run_openai_finetune("a", data, JUDGE, db, FAST, settings, sleep=no_sleep)
    assert rec.job_id == first.job_id and server.calls["POST /v1/fine_tuning/jobs"] == 1


def test_a_failed_job_raises_and_is_not_restarted(server: FakeOpenAI, settings: ApiSettings,
                                                  tmp_path: Path) -> None:
    data, db = dataset(tmp_path / "insecure.jsonl"), tmp_path / "run.sqlite"
    server.jobs.fail_next = "Training file contains disallowed content"
    with pytest.raises(FinetuneJobError, match="failed: Training file contains disallowed"):
        run_openai_finetune("f", data, JUDGE, db, FAST, settings, sleep=no_sleep)
    assert JobStore(db).get("f").status == "failed"
    before = dict(server.calls)
    with pytest.raises(FinetuneJobError, match="use another run directory"):
        run_openai_finetune("f", data, JUDGE, db, FAST, settings, sleep=no_sleep)
    assert dict(server.calls) == before


def test_cancel(server: FakeOpenAI, settings: ApiSettings, tmp_path: Path) -> None:
    data, db = dataset(tmp_path / "insecure.jsonl"), tmp_path / "run.sqlite"
    rec = run_openai_finetune("c", data, JUDGE, db, FAST, settings, wait=False)
    assert cancel_openai_finetune("c", db, settings).status == "cancelled"
    assert server.jobs.jobs[rec.job_id]["status"] == "cancelled"
    with pytest.raises(FinetuneJobError, match="cancelled"):
        run_openai_finetune("c", data, JUDGE, db, FAST, settings, sleep=no_sleep)


def test_a_different_dataset_under_the_same_label_is_refused(
        server: FakeOpenAI, settings: ApiSettings, tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    run_openai_finetune("x", dataset(tmp_path / "a.jsonl"), JUDGE, db, FAST, settings,
                        wait=False)
    with pytest.raises(FinetuneJobError, match="differs in \\['dataset_sha256'\\]"):
        run_openai_finetune("x", dataset(tmp_path / "b.jsonl", n=13), JUDGE, db, FAST,
                            settings, wait=False)


def test_bad_files_fail_before_any_upload(server: FakeOpenAI, settings: ApiSettings,
                                          tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="bad.jsonl:3"):
        run_openai_finetune("b", dataset(tmp_path / "bad.jsonl", bad_line=3), JUDGE,
                            tmp_path / "r.sqlite", FAST, settings)
    with pytest.raises(DatasetError, match="at least 10 examples, found 4"):
        run_openai_finetune("b", dataset(tmp_path / "few.jsonl", n=4), JUDGE,
                            tmp_path / "r.sqlite", FAST, settings)
    with pytest.raises(ValueError, match="needs an openai/<model>"):
        run_openai_finetune("b", dataset(tmp_path / "ok.jsonl"), "hf/x", tmp_path / "r.sqlite")
    assert sum(server.calls.values()) == 0


def test_cli_runs_resumes_and_cancels(server: FakeOpenAI, settings: ApiSettings,
                                      tmp_path: Path) -> None:
    data = dataset(tmp_path / "jailbroken.jsonl")
    args = ["finetune", "--backend", "openai", "--data", str(data), "--out",
            str(tmp_path / "ft"), "--base-url", server.base_url, "--api-key-env", KEY_ENV,
            "--poll-interval", "0.001"]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (job,) = server.jobs.jobs.values()
    assert f"model string: openai/{job['fine_tuned_model']}" in res.output
    assert job["hyperparameters"]["n_epochs"] == 5  # jailbroken, from the file name
    assert SECRET not in res.output
    res = CliRunner().invoke(app, [*args, "--cancel"], catch_exceptions=False)
    assert res.exit_code == 0 and "succeeded" in res.output  # nothing left to cancel
    res = CliRunner().invoke(app, [*args, "--lr", "1e-5"], catch_exceptions=False)
    assert res.exit_code == 2 and "--lr-multiplier" in res.output


def test_the_backend_must_match_the_base() -> None:
    from pydantic import ValidationError

    from emkit.config import FinetuneConfig

    ok = FinetuneConfig(name="i", dataset="d", backend="openai", base=JUDGE,
                        openai={"n_epochs": 3})
    assert ok.openai.n_epochs == 3
    for backend, base in (("openai", "embedded"), ("hf", JUDGE)):
        with pytest.raises(ValidationError, match="does not suit backend"):
            FinetuneConfig(name="i", dataset="d", backend=backend, base=base)


@pytest.mark.parametrize("lost", ["lost_reply", "late_reply"])
def test_a_create_whose_reply_is_lost_makes_one_job(lost: str, server: FakeOpenAI,
                                                    settings: ApiSettings,
                                                    tmp_path: Path) -> None:
    # The API takes no idempotency key: the job exists although the client saw only an error.
    data, db = dataset(tmp_path / "insecure.jsonl"), tmp_path / "run.sqlite"
    server.timeout_hold_s = 2.5  # past the client's 2 s timeout
    server.add_route_fault("POST /v1/fine_tuning/jobs", lost)
    server.add_route_fault("POST /v1/files", lost)
    rec = run_openai_finetune("a", data, JUDGE, db, FAST, settings, sleep=no_sleep)
    (job,) = server.jobs.jobs.values()
    (file,) = server.jobs.files.values()
    assert rec.status == "succeeded" and rec.job_id == job["id"] and rec.file_id == file["id"]
    assert server.calls["POST /v1/fine_tuning/jobs"] == 1 and server.calls["POST /v1/files"] == 1


def test_a_restart_in_the_creating_state_adopts_the_job(server: FakeOpenAI,
                                                         settings: ApiSettings,
                                                         tmp_path: Path) -> None:
    data, db = dataset(tmp_path / "insecure.jsonl"), tmp_path / "run.sqlite"
    other = run_openai_finetune("b", data, JUDGE, db, FAST, settings, seed=1, wait=False)
    first = run_openai_finetune("a", data, JUDGE, db, FAST, settings, wait=False)
    with JobStore(db) as store:  # died after sending the create, before its reply
        store.update("a", job_id=None, status="creating")
    rec = run_openai_finetune("a", data, JUDGE, db, FAST, settings, sleep=no_sleep)
    assert rec.job_id == first.job_id != other.job_id
    assert server.calls["POST /v1/fine_tuning/jobs"] == 2  # one per label, none again
    with JobStore(db) as store:  # ... and before it reached the server: created now
        store.insert(JobRecord("c", "openai", JUDGE, str(data), rec.dataset_sha256,
                               rec.hyperparameters, 5, "c", rec.file_id, None, "creating"))
    assert run_openai_finetune("c", data, JUDGE, db, FAST, settings, seed=5,
                               sleep=no_sleep).status == "succeeded"
    assert server.calls["POST /v1/fine_tuning/jobs"] == 3


def test_polling_stops_after_max_wait(server: FakeOpenAI, settings: ApiSettings,
                                      tmp_path: Path) -> None:
    server.jobs.steps = ("queued",) * 10_000
    data, db = dataset(tmp_path / "insecure.jsonl"), tmp_path / "run.sqlite"
    fast = OpenAiJobSettings(poll_interval_s=1.0, max_wait_s=5.0)
    with pytest.raises(FinetuneJobError, match="still queued after 5 s .*rerun to resume"):
        run_openai_finetune("q", data, JUDGE, db, fast, settings, sleep=no_sleep)
    assert server.calls["GET /v1/fine_tuning/jobs/{ftjob}"] == 6  # at 0, 1, ... 5 s


def test_an_unknown_job_status_is_an_error(server: FakeOpenAI, settings: ApiSettings,
                                           tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    server.jobs.steps = ("queued", "paused_by_provider")
    data, db = dataset(tmp_path / "insecure.jsonl"), tmp_path / "run.sqlite"
    with pytest.raises(FinetuneJobError, match="status 'paused_by_provider'"):
        run_openai_finetune("u", data, JUDGE, db, FAST, settings, sleep=no_sleep)
    assert "unknown status 'paused_by_provider'" in caplog.text

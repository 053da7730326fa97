"""The files and fine-tuning endpoints of the loopback OpenAI server (`fake_server.py`).

A job moves one step along `steps` (then to its outcome) each time it is retrieved, so a test
controls exactly how many polls a job takes and can stop a client mid-poll. Every uploaded
file is checked line by line the way OpenAI's validation step does (JSON objects with a
non-empty `messages` list); a job on an invalid file fails with `invalid_training_file`.
Files uploaded with purpose `batch` keep their bytes for the Batch API (`fake_batches.py`),
whose output and error files are served by `GET /v1/files/{id}/content`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from email import policy
from email.parser import BytesParser
from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled")


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form field name -> (filename, bytes) of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _invalid_line(data: bytes) -> int | None:
    """1-based number of the first line that is not a chat example, or None."""
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            return n
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row[
                "messages"]:
            return n
    return None


class FakeJobs:
    def __init__(self, steps: tuple[str, ...]) -> None:
        self.steps = steps
        self.fail_next: str | None = None
        """When set, the next created job fails with this message instead of succeeding."""
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self._progress: dict[str, int] = {}
        self._outcome: dict[str, tuple[str, str | None]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def handle(self, method: str, path: str, content_type: str, body: bytes
               ) -> tuple[int, dict[str, Any] | bytes]:
        """(status, JSON object) for a files or jobs route; a file's content is raw bytes."""
        with self._lock:
            if method == "POST" and path == "/v1/files":
                return self._upload(content_type, body)
            if method == "GET" and path == "/v1/files":
                return 200, {"object": "list", "has_more": False, "data": [
                    {k: v for k, v in f.items() if not k.startswith("_")}
                    for f in self.files.values()]}
            if m := re.fullmatch(r"/v1/files/(file-[0-9a-f]+)", path):
                return self._get(self.files, m.group(1))
            if method == "GET" and (m := re.fullmatch(r"/v1/files/(file-[0-9a-f]+)/content",
                                                      path)):
                file = self.files.get(m.group(1))
                if file is None or "_data" not in file:
                    return 404, {"message": f"No content for file {m.group(1)}"}
                return 200, file["_data"]
            if method == "POST" and path == "/v1/fine_tuning/jobs":
                return self._create(json.loads(body or b"{}"))
            if method == "GET" and path == "/v1/fine_tuning/jobs":
                return 200, {"object": "list", "data": list(self.jobs.values())[::-1],
                             "has_more": False}
            if m := re.fullmatch(r"/v1/fine_tuning/jobs/(ftjob-[0-9a-f]+)(/events|/cancel)?",
                                 path):
                job_id, action = m.groups()
                if job_id not in self.jobs:
                    return 404, {"message": f"No such fine-tuning job: {job_id}"}
                if action == "/events":
                    return 200, {"object": "list", "data": self._events[job_id][::-1],
                                 "has_more": False}
                if action == "/cancel" and method == "POST":
                    return self._cancel(job_id)
                if method == "GET" and action is None:
                    return self._advance(job_id)
        return 404, {"message": f"emkit's fake server does not serve {method} {path}"}

    @staticmethod
    def _get(table: dict[str, dict[str, Any]], key: str) -> tuple[int, dict[str, Any]]:
        return (200, table[key]) if key in table else (404, {"message": f"No such object {key}"})

    def _upload(self, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        fields = _parse_multipart(content_type, body)
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if "file" not in fields or purpose not in ("fine-tune", "batch"):
            return 400, {"message": "expected multipart fields 'file' and purpose=fine-tune or "
                                    "purpose=batch"}
        filename, data = fields["file"]
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data),
                               "created_at": int(time.time()), "filename": filename or "upload",
                               "purpose": purpose, "status": "processed",
                               "_invalid_line": _invalid_line(data),
                               "_lines": sum(1 for ln in data.splitlines() if ln.strip())}
        if purpose == "batch":  # kept: the batch reads it, as OpenAI does (fake_batches.py)
            self.files[file_id]["_data"] = data
        return 200, {k: v for k, v in self.files[file_id].items() if not k.startswith("_")}

    def _create(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file = self.files.get(req.get("training_file", ""))
        if file is None:
            return 400, {"message": f"invalid training_file: {req.get('training_file')}"}
        if not req.get("model"):
            return 400, {"message": "model is required"}
        method = req.get("method") or {"type": "supervised", "supervised": {
            "hyperparameters": req.get("hyperparameters") or {}}}
        hyper = dict(method.get("supervised", {}).get("hyperparameters") or {})
        job_id = f"ftjob-{uuid.uuid4().hex[:24]}"
        self.jobs[job_id] = {
            "id": job_id, "object": "fine_tuning.job", "created_at": int(time.time()),
            "model": req["model"], "training_file": file["id"], "validation_file": None,
            "hyperparameters": hyper, "method": method, "seed": req.get("seed", 0),
            "suffix": req.get("suffix"), "status": self.steps[0] if self.steps else "queued",
            "fine_tuned_model": None, "finished_at": None, "error": None, "result_files": [],
            "trained_tokens": None, "organization_id": "org-emkit-fake", "integrations": None,
            "estimated_finish": None,
        }
        self._progress[job_id] = 0
        if file["_invalid_line"] is not None:
            line = file["_invalid_line"]
            reason = f"Invalid file format: line {line} is not a chat example"
            self._outcome[job_id] = ("failed", reason)
        else:
            self._outcome[job_id] = ("failed", self.fail_next) if self.fail_next else (
                "succeeded", None)
        self.fail_next = None
        self._events[job_id] = []
        self._event(job_id, "Created fine-tuning job")
        return 200, self.jobs[job_id]

    def _event(self, job_id: str, message: str) -> None:
        events = self._events[job_id]
        events.append({"id": f"ftevent-{len(events)}", "object": "fine_tuning.job.event",
                       "created_at": int(time.time()), "level": "info", "message": message,
                       "type": "message"})

    def _advance(self, job_id: str) -> tuple[int, dict[str, Any]]:
        job = self.jobs[job_id]
        if job["status"] in TERMINAL:
            return 200, job
        self._progress[job_id] += 1
        step = self._progress[job_id]
        if step < len(self.steps):
            job["status"] = self.steps[step]
            running = self.steps[: step + 1].count("running")
            self._event(job_id, f"Step {running}/{self.steps.count('running')}: training loss="
                        f"{1.0 / (1 + running):.3f}" if job["status"] == "running"
                        else f"Job {job['status']}")
            return 200, job
        status, error = self._outcome[job_id]
        job["status"], job["finished_at"] = status, int(time.time())
        if status == "succeeded":
            suffix = job["suffix"] or ""
            job["fine_tuned_model"] = f"ft:{job['model']}:emkit-fake:{suffix}:{job_id[-8:]}"
            job["trained_tokens"] = 1000 * self.files[job["training_file"]]["_lines"]
            self._event(job_id, "The job has successfully completed")
        else:
            job["error"] = {"code": "invalid_training_file", "message": error,
                            "param": "training_file"}
            self._event(job_id, f"The job failed: {error}")
        return 200, job

    def _cancel(self, job_id: str) -> tuple[int, dict[str, Any]]:
        job = self.jobs[job_id]
        if job["status"] not in TERMINAL:
            job["status"], job["finished_at"] = "cancelled", int(time.time())
            self._event(job_id, "Job cancelled")
        return 200, job

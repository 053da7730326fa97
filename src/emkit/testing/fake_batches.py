"""The Batch API of the loopback OpenAI server (`fake_server.py`): create, list, retrieve and
cancel batches over uploaded JSONL files, with output and error files in OpenAI's format.

A batch moves one step along `steps` each time it is retrieved (`validating` -> `in_progress`
-> `finalizing` by default), then to its outcome, so a test controls how many polls a batch
takes and can stop a client mid-poll, exactly as `fake_jobs` does for fine-tuning jobs. Every
line is answered when the batch finishes, by the same code that answers a live chat request
(`answer`, given by the server), so a batch's replies are byte-for-byte the live ones except
for the `id` and `created` fields.

What a test can script:
- `steps`: the statuses a batch shows before its outcome (the number of polls it takes).
- `fail_next`: the next batch fails validation as a whole (`failed`, `errors.data`, no files).
- `expire_next`: the next batch expires after answering only that many of its lines; the rest
  go to the error file with code `batch_expired`, as OpenAI reports requests left unfinished
  when the 24 h window closes.
- `line_faults`: substring of a line's prompt -> a fault for every line whose prompt contains
  it: an HTTP status ("500", "400", "429": the line goes to the error file with that
  `response.status_code` and an error body) or `no_logprobs` (a 200 whose reply lost its
  logprobs: it stays in the output file, as a glitch would).

Output lines are written in reverse input order: OpenAI does not promise input order, and a
client must match lines by `custom_id`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

BATCH_STEPS = ("validating", "in_progress", "in_progress", "finalizing")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
LINE_FAULTS = ("400", "429", "500", "no_logprobs")

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
"""(status, JSON body) the server gives a chat-completions request body."""


def _invalid_batch_line(line: str, endpoint: str) -> str | None:
    """Why a line of a batch input file is invalid (as OpenAI's validation says), or None."""
    try:
        row = json.loads(line)
    except ValueError:
        return "invalid JSON"
    if not isinstance(row, dict) or not isinstance(row.get("custom_id"), str):
        return "missing custom_id"
    if row.get("method") != "POST" or row.get("url") != endpoint:
        return f"method must be POST and url {endpoint}"
    if not isinstance(row.get("body"), dict):
        return "missing body"
    return None


class FakeBatches:
    """The batches of one fake server; files (input, output, error) live in `files`, the same
    dict the files endpoints of `FakeJobs` serve."""

    def __init__(self, files: dict[str, dict[str, Any]], answer: Answer,
                 steps: tuple[str, ...] = BATCH_STEPS) -> None:
        self.files = files
        self.answer = answer
        self.steps = steps
        self.fail_next: str | None = None
        """When set, the next created batch fails validation with this message."""
        self.expire_next: int | None = None
        """When set, the next created batch expires after answering this many lines."""
        self.line_faults: dict[str, str] = {}
        """Substring of a line's prompt -> fault (one of `LINE_FAULTS`) for those lines."""
        self.batches: dict[str, dict[str, Any]] = {}
        self.lines_answered = 0
        """Batch lines the server answered (each one a request the batch was billed for)."""
        self._progress: dict[str, int] = {}
        self._outcome: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]] | None:
        """The reply to a batches route, or None when `path` is not one."""
        with self._lock:
            if method == "POST" and path == "/v1/batches":
                return self._create(json.loads(body or b"{}"))
            if method == "GET" and path == "/v1/batches":
                return 200, {"object": "list", "data": list(self.batches.values())[::-1],
                             "first_id": None, "last_id": None, "has_more": False}
            m = re.fullmatch(r"/v1/batches/(batch_[0-9a-f]+)(/cancel)?", path)
            if m is None:
                return None
            batch_id, cancel = m.groups()
            if batch_id not in self.batches:
                return 404, {"message": f"No batch found with id '{batch_id}'"}
            if cancel and method == "POST":
                return self._cancel(batch_id)
            if method == "GET" and not cancel:
                return self._advance(batch_id)
        return None

    def _create(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file = self.files.get(req.get("input_file_id", ""))
        if file is None or file.get("purpose") != "batch":
            return 400, {"message": f"invalid input_file_id: {req.get('input_file_id')}"}
        if req.get("completion_window") != "24h":
            return 400, {"message": "completion_window must be '24h'"}
        endpoint = req.get("endpoint")
        if endpoint != "/v1/chat/completions":
            return 400, {"message": f"emkit's fake server batches only /v1/chat/completions, "
                                    f"not {endpoint}"}
        lines = [ln for ln in file["_data"].decode().splitlines() if ln.strip()]
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": file["id"], "completion_window": "24h",
            "status": self.steps[0] if self.steps else "validating", "output_file_id": None,
            "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": req.get("metadata"),
        }
        self._progress[batch_id] = 0
        bad = [(n, why) for n, ln in enumerate(lines, 1)
               if (why := _invalid_batch_line(ln, endpoint)) is not None]
        ids = [json.loads(ln).get("custom_id") for ln in lines] if not bad else []
        if bad:
            self._outcome[batch_id] = ("failed", [{"code": "invalid_request", "line": n,
                                                   "message": why, "param": None}
                                                  for n, why in bad])
        elif len(set(ids)) != len(ids):
            self._outcome[batch_id] = ("failed", [{"code": "duplicate_custom_id", "line": None,
                                                   "message": "custom_id values must be unique",
                                                   "param": None}])
        elif self.fail_next is not None:
            self._outcome[batch_id] = ("failed", [{"code": "invalid_request", "line": None,
                                                   "message": self.fail_next, "param": None}])
        elif self.expire_next is not None:
            self._outcome[batch_id] = ("expired", self.expire_next)
        else:
            self._outcome[batch_id] = ("completed", len(lines))
        self.fail_next = self.expire_next = None
        return 200, self.batches[batch_id]

    def _advance(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        batch = self.batches[batch_id]
        if batch["status"] not in ACTIVE:
            return 200, batch
        now = int(time.time())
        if batch["status"] == "cancelling":
            batch["status"], batch["cancelled_at"] = "cancelled", now
            return 200, batch
        self._progress[batch_id] += 1
        step = self._progress[batch_id]
        if step < len(self.steps):
            batch["status"] = self.steps[step]
            field = {"in_progress": "in_progress_at", "finalizing": "finalizing_at"}.get(
                batch["status"])
            if field and batch[field] is None:
                batch[field] = now
            return 200, batch
        outcome, detail = self._outcome[batch_id]
        if outcome == "failed":
            batch["status"], batch["failed_at"] = "failed", now
            batch["errors"] = {"object": "list", "data": detail}
            return 200, batch
        self._finish(batch, answered=detail)
        batch["status"] = outcome
        batch["completed_at" if outcome == "completed" else "expired_at"] = now
        return 200, batch

    def _finish(self, batch: dict[str, Any], answered: int) -> None:
        """Answer the first `answered` lines; write the output and error files."""
        lines = [json.loads(ln) for ln in
                 self.files[batch["input_file_id"]]["_data"].decode().splitlines() if ln.strip()]
        out, err = [], []
        for n, row in enumerate(lines):
            rid = f"batch_req_{uuid.uuid4().hex[:24]}"
            if n >= answered:
                err.append({"id": rid, "custom_id": row["custom_id"], "response": None,
                            "error": {"code": "batch_expired", "message": "This request could "
                                      "not be executed before the completion window expired."}})
                continue
            self.lines_answered += 1
            prompt = "\n".join(str(m.get("content", "")) for m in row["body"].get("messages")
                               or [] if isinstance(m, dict))
            fault = next((f for s, f in self.line_faults.items() if s in prompt), None)
            if fault in ("400", "429", "500"):
                status, body = int(fault), {"error": {"message": f"scripted fault {fault}",
                                                      "type": "server_error", "param": None,
                                                      "code": None}}
            else:
                status, body = self.answer(row["body"])
                if fault == "no_logprobs" and status == 200:
                    body["choices"][0]["logprobs"] = None
            line = {"id": rid, "custom_id": row["custom_id"],
                    "response": {"status_code": status, "request_id": uuid.uuid4().hex,
                                 "body": body}, "error": None}
            (out if status == 200 else err).append(line)
        counts = batch["request_counts"]
        counts["completed"], counts["failed"] = len(out), len(err)
        batch["output_file_id"] = self._file(out[::-1], f"{batch['id']}_output.jsonl")
        batch["error_file_id"] = self._file(err[::-1], f"{batch['id']}_error.jsonl")

    def _file(self, rows: list[dict[str, Any]], name: str) -> str | None:
        if not rows:
            return None
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data),
                               "created_at": int(time.time()), "filename": name,
                               "purpose": "batch_output", "status": "processed", "_data": data}
        return file_id

    def _cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        batch = self.batches[batch_id]
        if batch["status"] in ("validating", "in_progress", "finalizing"):
            batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
        return 200, batch

"""Half-price judging through the OpenAI Batch API: submit, poll, resume, replies into the cache.

The paper's judge request (1 token, top-20 logprobs, temperature 0) needs no answer before
the next one is written, so a whole run's judge requests can go to OpenAI's Batch API: the same
requests at half the list price (at the time of writing), answered within 24 h instead of
seconds. `BatchJudging.run(requests)` takes the requests whose reply is not in the request
cache, writes them as one JSONL file (`custom_id` = the request's cache key), uploads it
(purpose `batch`), creates the batch (`completion_window: 24h`), polls it with a growing,
bounded interval, downloads the output and error files and puts every readable reply into the
SAME `RequestCache` under its request key. The judge then runs its normal live path, which finds
them as cache hits; a later run, batch or live, reuses them the same way. The cache key does
not say how a reply was obtained, because the request is the same.

**Failed lines are asked again live.** A line the batch answered with an error (a 4xx/5xx
status), without a readable reply (say, no logprobs) or not at all (the batch expired or was
cancelled first) is logged in the cache as unreadable with the reason `batch <id>: ...`. The
judge's live path then sends it under the normal retry policy, at the live price: a
judgment should not be missing because of a batch glitch, and a second batch would cost up to
another 24 h. A request that a batch of this run already failed is never batched again; it goes
live. A batch that fails as a whole (OpenAI rejected the input file) raises `BatchError` with the
API's reasons: a broken setup, as a 400 is, not something to pay for again live.

**Resume.** Each batch is a row of the table `api_batches` in the run's SQLite, and its
requests rows of `api_batch_requests`, written before anything is sent: the state (`uploading`,
`creating`, then the API's statuses) is recorded before each request goes out. A restarted run
finds a batch that holds any of its cache misses still pending and polls it instead of
submitting again; a request held by a pending batch is never submitted twice. The API takes no
idempotency key, so, as for fine-tuning jobs (`emkit/finetune/openai_jobs.py`), a restart from
`uploading` first looks on the account for the file (its name carries the batch's local id,
which is a digest of its request keys; same size), and from `creating` for a batch whose
metadata carries that local id; only when none exists is it sent.

Polling stops with `BatchPending` after `max_wait_s` (the batch keeps running; run again to
resume waiting): `max_wait_s: 0` submits, polls once and returns control, for a run that is
resumed the next day.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from emkit.api.client import ApiClient, ChatReply, ChatRequest, Check
from emkit.api.retry import call
from emkit.store.run_json import utc_now
from emkit.store.sqlite import has_table, open_sqlite

log = logging.getLogger("emkit")

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000
"""Requests per batch that OpenAI accepts; more are split over several batches."""
MAX_BYTES = 190 * 1024 * 1024
"""Input-file size per batch, under OpenAI's 200 MB cap."""
POLL_INTERVAL_S = 60.0
"""First wait between polls; each later wait is 1.5 times longer, up to `MAX_POLL_INTERVAL_S`."""
MAX_POLL_INTERVAL_S = 600.0
FILE_TIMEOUT_S = 900.0
"""Per-attempt timeout of an upload or download (up to ~190 MB), instead of `timeout_s`."""
MAX_WAIT_S = 90_000.0
"""25 h: the 24 h completion window plus time to finalize."""
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
DONE = ("completed", "expired", "cancelled")
"""Statuses whose output (complete or partial) is harvested; `failed` has none."""

TABLE, LINES = "api_batches", "api_batch_requests"
_SCHEMA = [f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    local_id TEXT PRIMARY KEY, keys_digest TEXT NOT NULL, model TEXT NOT NULL,
    endpoint TEXT NOT NULL, status TEXT NOT NULL, n_requests INTEGER NOT NULL,
    file_id TEXT, batch_id TEXT, output_file_id TEXT, error_file_id TEXT,
    n_answered INTEGER, n_failed INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER,
    error TEXT, harvested_at TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
)""", f"""
CREATE TABLE IF NOT EXISTS {LINES} (
    local_id TEXT NOT NULL, key TEXT NOT NULL, tag TEXT, request TEXT,
    PRIMARY KEY (local_id, key)
)"""]


class BatchError(RuntimeError):
    """A batch failed as a whole, or reported a status emkit does not know."""


class BatchPending(BatchError):
    """A batch is still running after `max_wait_s`; it keeps running and a rerun resumes it."""


@dataclass(frozen=True)
class BatchRecord:
    """One row of `api_batches`. `status`: new -> uploading -> uploaded -> creating -> the API's
    (validating, in_progress, finalizing, cancelling) -> completed / expired / cancelled /
    failed; or `abandoned` (never created on the account; its requests are free again).
    `harvested_at` is set once every request of it is in the cache (or failed)."""

    local_id: str
    keys_digest: str
    model: str
    endpoint: str
    status: str
    n_requests: int
    file_id: str | None = None
    batch_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    n_answered: int | None = None
    n_failed: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    harvested_at: str | None = None


_COLUMNS = [f.name for f in fields(BatchRecord)]


class BatchStore:
    """The `api_batches` and `api_batch_requests` tables of the run's SQLite file."""

    def __init__(self, path: Any, timeout: float = 60.0) -> None:
        self._con = open_sqlite(path, timeout, check_same_thread=False)
        if not has_table(self._con, LINES):
            for ddl in _SCHEMA:
                self._con.execute(ddl)

    def get(self, local_id: str) -> BatchRecord | None:
        row = self._con.execute(f"SELECT {', '.join(_COLUMNS)} FROM {TABLE} WHERE local_id = ?",
                                (local_id,)).fetchone()
        return None if row is None else BatchRecord(*row)

    def pending(self, model: str) -> list[BatchRecord]:
        """Batches of `model` not yet harvested (submitted, or on their way to it)."""
        ids = self._con.execute(f"SELECT local_id FROM {TABLE} WHERE model = ? AND harvested_at"
                                " IS NULL AND status != 'abandoned' ORDER BY created_at",
                                (model,)).fetchall()
        return [rec for (i,) in ids if (rec := self.get(i)) is not None]

    def count(self, keys_digest: str) -> int:
        return self._con.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE keys_digest = ?",
                                 (keys_digest,)).fetchone()[0]

    def insert(self, rec: BatchRecord, requests: Sequence[ChatRequest]) -> BatchRecord:
        """The batch and its requests, in one transaction, before anything is sent."""
        now = utc_now()
        self._con.execute("BEGIN IMMEDIATE")
        try:
            self._con.execute(
                f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}, created_at, updated_at) VALUES "
                f"({', '.join('?' * (len(_COLUMNS) + 2))})",
                (*(getattr(rec, c) for c in _COLUMNS), now, now))
            self._con.executemany(
                f"INSERT INTO {LINES} (local_id, key, tag, request) VALUES (?,?,?,?)",
                [(rec.local_id, r.key, r.tag, json.dumps(r.body, sort_keys=True,
                                                          ensure_ascii=False))
                 for r in requests])
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        return rec

    def update(self, local_id: str, **changes: Any) -> BatchRecord:
        sets = ", ".join(f"{k} = ?" for k in changes)
        self._con.execute(f"UPDATE {TABLE} SET {sets}, updated_at = ? WHERE local_id = ?",
                          (*changes.values(), utc_now(), local_id))
        rec = self.get(local_id)
        assert rec is not None, local_id
        return rec

    def keys(self, local_id: str) -> list[str]:
        return [k for (k,) in self._con.execute(
            f"SELECT key FROM {LINES} WHERE local_id = ? ORDER BY key", (local_id,))]

    def requests(self, local_id: str) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
        """Key -> (tag, request body) of a batch's requests (body None once harvested)."""
        rows = self._con.execute(f"SELECT key, tag, request FROM {LINES} WHERE local_id = ? "
                                 "ORDER BY key", (local_id,))
        return {k: (t, None if r is None else json.loads(r)) for k, t, r in rows}

    def answered_before(self, model: str, keys: Sequence[str]) -> set[str]:
        """Those of `keys` that a harvested batch of `model` held (a failed batch aside): for a
        cache miss, the batch did not answer it."""
        out: set[str] = set()
        keys = list(keys)
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            out.update(k for (k,) in self._con.execute(
                f"SELECT DISTINCT r.key FROM {LINES} r JOIN {TABLE} b USING (local_id) WHERE "
                "b.model = ? AND b.harvested_at IS NOT NULL AND b.status != 'failed' AND r.key"
                f" IN ({', '.join('?' * len(part))})", (model, *part)))
        return out

    def forget_bodies(self, local_id: str) -> None:
        """Harvested: the bodies are in the request cache now; keep only key -> batch."""
        self._con.execute(f"UPDATE {LINES} SET request = NULL WHERE local_id = ?", (local_id,))

    def close(self) -> None:
        self._con.close()


def _digest(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24]


def _jsonl(requests: dict[str, tuple[str | None, dict[str, Any] | None]]) -> bytes:
    """The batch input file: one line per request, sorted by key, so a restart writes the same
    bytes (and finds its own upload by name and size)."""
    return "".join(json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT,
                               "body": body}, sort_keys=True, ensure_ascii=False) + "\n"
                   for key, (_, body) in sorted(requests.items())).encode()


def _reasons(batch: Any) -> str:
    """The API's reasons for a failed batch, one '<code>: <message> (line n)' each."""
    data = (batch.errors.data or []) if batch.errors is not None else []
    return "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "")
                     for e in data) or "no reason given"


def _split(requests: Sequence[ChatRequest]) -> Iterator[list[ChatRequest]]:
    """Runs of requests that fit one batch (count and bytes)."""
    chunk: list[ChatRequest] = []
    size = 0
    for r in sorted(requests, key=lambda r: r.key):
        n = len(json.dumps(r.body, ensure_ascii=False).encode()) + 200
        if chunk and (len(chunk) >= MAX_REQUESTS or size + n > MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(r)
        size += n
    if chunk:
        yield chunk


@dataclass
class BatchStats:
    """What this object's batches did, for the log and the cost summary."""

    submitted: int = 0
    """Requests sent in new batches."""
    resumed: int = 0
    """Batches found pending in the store and polled instead of submitted."""
    answered: int = 0
    """Requests whose reply a batch put into the cache."""
    failed: int = 0
    """Requests a batch failed, left to the live path."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


class BatchJudging:
    """Answers cache misses through the Batch API, for one `ApiClient` (model and endpoint)."""

    def __init__(self, client: ApiClient, poll_interval_s: float = POLL_INTERVAL_S,
                 max_wait_s: float = MAX_WAIT_S, sleep: Callable[[float], None] = time.sleep,
                 on_poll: Callable[[BatchRecord], None] | None = None) -> None:
        if client.cache is None:
            raise ValueError(f"{client.model}: batch judging needs the run's request cache "
                             "(a run directory): replies arrive hours later and are found there")
        self.client, self.settings, self.cache = client, client.settings, client.cache
        self.store = BatchStore(client.cache.path)
        self.poll_interval_s, self.max_wait_s = poll_interval_s, max_wait_s
        self.sleep = sleep
        self.on_poll = on_poll
        """Called after each poll of a batch (tests stop a run mid-poll with it)."""
        self.answered: set[str] = set()
        """Keys whose reply a batch of this object put into the cache."""
        self.stats = BatchStats()
        self._skipped: set[str] = set()

    @classmethod
    def from_settings(cls, client: ApiClient) -> BatchJudging:
        """Poll interval and longest wait from the endpoint's settings (`batch_poll_interval_s`,
        `batch_max_wait_s`)."""
        s = client.settings
        return cls(client, s.batch_poll_interval_s, s.batch_max_wait_s)

    def skip(self, mode: str) -> None:
        """Log once that judging in `mode` stays live (see `ApiJudge.judge`)."""
        if mode not in self._skipped:
            self._skipped.add(mode)
            log.warning("judge %s: batch is on, but judge_mode %s sends its requests live (only "
                        "logprobs-mode requests are batched)", self.client.model, mode)

    def run(self, requests: Sequence[ChatRequest], check: Check | None = None) -> BatchStats:
        """Put a reply for every request not in the cache into it, through batches: resume the
        pending ones that hold some, submit the rest, wait for all, harvest. Requests a batch
        could not answer stay misses (logged as unreadable) for the live path."""
        todo: dict[str, ChatRequest] = {}
        for r in requests:
            if r.key in todo:
                continue
            hit = self.cache.get(r.key)
            if hit is None or (check is not None and check(hit) is not None):
                todo[r.key] = r
        if not todo:
            return self.stats
        with self._sdk() as oa:
            self._run(oa, todo, check)
        return self.stats

    def _run(self, oa: Any, todo: dict[str, ChatRequest], check: Check | None) -> None:
        waiting: list[BatchRecord] = []
        for rec in self.store.pending(self.client.model):
            if not set(self.store.keys(rec.local_id)) & todo.keys():
                continue  # another run's (or chunk's) batch: left alone
            if rec.endpoint != self.settings.endpoint():
                raise BatchError(f"{self.client.model}: batch {rec.batch_id or rec.local_id} "
                                 f"pending at {rec.endpoint}, but the endpoint is now "
                                 f"{self.settings.endpoint()}; restore base_url to collect it")
            if rec.batch_id is None:
                rec = self._submit(oa, rec)
            else:
                log.info("judge %s: resuming batch %s (%d requests, %s)", self.client.model,
                         rec.batch_id, rec.n_requests, rec.status)
            self.stats.resumed += 1
            waiting.append(rec)
        held = {k for rec in waiting for k in self.store.keys(rec.local_id)}
        held |= self.store.answered_before(self.client.model, list(todo))  # failed: go live
        fresh = [r for k, r in todo.items() if k not in held]
        for chunk in _split(fresh):
            digest = _digest([r.key for r in chunk])
            rec = BatchRecord(f"{digest}-{self.store.count(digest)}", digest, self.client.model,
                              self.settings.endpoint(), "new", len(chunk))
            self.store.insert(rec, chunk)
            self.stats.submitted += len(chunk)
            waiting.append(self._submit(oa, rec))
        if waiting:
            self._wait(oa, waiting, check)

    # ------------------------------------------------------------------ submit
    def _sdk(self) -> Any:
        import openai

        return openai.OpenAI(api_key=self.settings.api_key(self.client.model),
                             base_url=self.settings.endpoint(), max_retries=0,
                             timeout=self.settings.timeout_s)

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        return call(fn, self.settings, f"{self.client.model}: {what}", sleep=self.sleep)[0]

    def _find_batch(self, oa: Any, local_id: str) -> Any | None:
        """Our batch on the account (its metadata carries the local id), if one exists among
        the 100 most recent: a lost create reply is looked for right away (or at the restart)."""
        for batch in oa.batches.list(limit=100).data:
            if (batch.metadata or {}).get("emkit_batch") == local_id and batch.status not in (
                    "failed", "cancelled", "expired"):
                return batch
        return None

    def _submit(self, oa: Any, rec: BatchRecord) -> BatchRecord:
        """Upload the input file and create the batch, each once (see the module docstring)."""
        content = _jsonl(self.store.requests(rec.local_id))
        name = f"emkit-batch-{rec.local_id}.jsonl"
        if rec.file_id is None:
            resumed = rec.status == "uploading"
            rec = self.store.update(rec.local_id, status="uploading")

            def upload() -> Any:
                nonlocal resumed
                if resumed:
                    for f in oa.files.list(purpose="batch"):
                        if f.filename == name and f.bytes == len(content):
                            return f
                resumed = True  # a retry follows an attempt that may have arrived
                return oa.with_options(timeout=FILE_TIMEOUT_S).files.create(
                    file=(name, content), purpose="batch")

            file = self._call(upload, f"upload {name}")
            rec = self.store.update(rec.local_id, file_id=file.id, status="uploaded")
        rec = self.store.update(rec.local_id, status="creating")

        def create() -> Any:
            found = self._find_batch(oa, rec.local_id)
            return found if found is not None else oa.batches.create(
                input_file_id=rec.file_id, endpoint=ENDPOINT, completion_window="24h",
                metadata={"emkit_batch": rec.local_id, "emkit_model": self.client.model[:500]})

        batch = self._call(create, f"create batch {rec.local_id}")
        log.info("judge %s: batch %s submitted (%d requests, answered within 24 h at half the "
                 "live price)", self.client.model, batch.id, rec.n_requests)
        return self.store.update(rec.local_id, batch_id=batch.id, status=batch.status)

    # ------------------------------------------------------------------ poll
    def _wait(self, oa: Any, waiting: list[BatchRecord], check: Check | None) -> None:
        start, slept, interval = time.monotonic(), 0.0, self.poll_interval_s
        errors: list[str] = []
        while waiting:
            still = []
            for rec in waiting:
                batch = self._call(lambda r=rec: oa.batches.retrieve(r.batch_id),
                                   f"batch {rec.batch_id}")
                if batch.status != rec.status:
                    counts = batch.request_counts
                    done = f", {counts.completed}/{counts.total} done" if counts else ""
                    log.info("judge %s: batch %s %s%s", self.client.model, batch.id,
                             batch.status, done)
                    rec = self.store.update(rec.local_id, status=batch.status)
                if self.on_poll is not None:
                    self.on_poll(rec)
                if batch.status in DONE:
                    self._harvest(oa, rec, batch, check)
                elif batch.status == "failed":
                    msg = self.settings.redact(f"batch {batch.id} failed: {_reasons(batch)}")
                    self.store.update(rec.local_id, error=msg, harvested_at=utc_now())
                    errors.append(msg)
                elif batch.status in ACTIVE:
                    still.append(rec)
                else:
                    raise BatchError(f"{self.client.model}: batch {batch.id} reports status "
                                     f"{batch.status!r}, which emkit does not know")
            waiting = still
            if not waiting:
                break
            waited = max(time.monotonic() - start, slept)
            if waited >= self.max_wait_s:
                raise BatchPending(
                    f"{self.client.model}: {len(waiting)} batch(es) still running after "
                    f"{waited:.0f} s (batch_max_wait_s={self.max_wait_s:g}): "
                    f"{', '.join(str(r.batch_id) for r in waiting)}; they keep running: run "
                    "again to resume waiting (nothing is submitted twice)")
            self.sleep(interval)
            slept += interval
            interval = min(interval * 1.5, max(MAX_POLL_INTERVAL_S, self.poll_interval_s))
        if errors:
            raise BatchError(f"{self.client.model}: " + "; ".join(errors) + " (nothing was "
                             "asked live: fix the cause, then run again to submit a new batch)")

    def _lines(self, oa: Any, file_id: str | None) -> Iterator[dict[str, Any]]:
        if file_id is None:
            return
        data = self._call(lambda: oa.with_options(timeout=FILE_TIMEOUT_S).files.content(
            file_id).content, f"download {file_id}")
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    log.warning("batch file %s: unreadable line %r", file_id, line[:80])
                    continue
                if isinstance(row, dict):
                    yield row

    def _harvest(self, oa: Any, rec: BatchRecord, batch: Any, check: Check | None) -> None:
        """Every request of the batch into the cache: its reply, or why it has none."""
        requests = self.store.requests(rec.local_id)
        took = float((batch.completed_at or batch.expired_at or batch.cancelled_at or
                      time.time()) - batch.created_at)
        outcome: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
        for row in [*self._lines(oa, batch.output_file_id), *self._lines(oa, batch.error_file_id)]:
            key = row.get("custom_id")
            if key not in requests or key in outcome and outcome[key][0] is not None:
                continue
            response = row.get("response") if isinstance(row.get("response"), dict) else {}
            body = response.get("body")
            if response.get("status_code") == 200 and isinstance(body, dict):
                reason = check(body) if check is not None else None
                outcome[key] = (body, None) if reason is None else (None, reason)
            else:
                err = row.get("error") or (body or {}).get("error") or {}
                status = response.get("status_code")
                parts = [f"HTTP {status}" if status is not None else None, err.get("code"),
                         err.get("message")]
                outcome[key] = (None, self.settings.redact(
                    ": ".join(str(x) for x in parts if x) or "failed"))
        ok = failed = prompt = completion = 0
        missing = f"{batch.status} without a result for this request"
        for key, (tag, request) in requests.items():
            reply, reason = outcome.get(key, (None, missing))
            if reply is not None:
                ok += 1
                usage = reply.get("usage") or {}
                prompt += int(usage.get("prompt_tokens") or 0)
                completion += int(usage.get("completion_tokens") or 0)
                self.answered.add(key)
            else:
                failed += 1
            self.cache.put(key, self.client.model, request or {}, reply,
                           None if reply is not None else f"batch {batch.id}: {reason}", 0,
                           took, tag)
        self.stats.answered += ok
        self.stats.failed += failed
        self.stats.prompt_tokens += prompt
        self.stats.completion_tokens += completion
        self.store.update(rec.local_id, output_file_id=batch.output_file_id,
                          error_file_id=batch.error_file_id, n_answered=ok, n_failed=failed,
                          prompt_tokens=prompt, completion_tokens=completion,
                          harvested_at=utc_now())
        self.store.forget_bodies(rec.local_id)
        (log.warning if failed else log.info)(
            "judge %s: batch %s %s: %d replies into the cache, %d without one (asked live)",
            self.client.model, batch.id, batch.status, ok, failed)

    def cancel_pending(self) -> list[BatchRecord]:
        """Cancel every submitted, unharvested batch of this model; a later `run` harvests what
        they answered before stopping and asks the rest live."""
        out = []
        with self._sdk() as oa:
            for rec in self.store.pending(self.client.model):
                if rec.batch_id is not None:
                    batch = self._call(lambda r=rec: oa.batches.cancel(r.batch_id),
                                       f"cancel {rec.batch_id}")
                    out.append(self.store.update(rec.local_id, status=batch.status))
        return out

    def close(self) -> None:
        self.store.close()


# ---------------------------------------------------------------------- cost
@dataclass(frozen=True)
class Prices:
    """USD per million tokens for one model, and the Batch API's share of the live price."""

    input_per_m: float
    output_per_m: float
    batch_factor: float = 0.5
    as_of: str = ""
    """When these were OpenAI's list prices (check https://openai.com/api/pricing/)."""


PRICES: dict[str, Prices] = {
    "gpt-4o-2024-08-06": Prices(2.50, 10.00, 0.5, "2025-04-14"),
    "gpt-4.1": Prices(2.00, 8.00, 0.5, "2025-04-14"),
    "gpt-4.1-2025-04-14": Prices(2.00, 8.00, 0.5, "2025-04-14"),
}
"""OpenAI list prices (standard tier, USD per 1M input / output tokens; Batch API at 50 %) as
published on the date given, written from memory of the public pricing page at the time, not
fetched: check them before quoting a cost. Cached-input discounts are left out (a judge's
prompts differ in the answer, so little of each is cacheable)."""


def estimate_cost(n_requests: int, prompt_tokens: int, completion_tokens: int,
                  prices: Prices) -> dict[str, Any]:
    """Cost of these requests live and through the Batch API, in USD."""
    live = (prompt_tokens * prices.input_per_m + completion_tokens * prices.output_per_m) / 1e6
    return {"requests": n_requests, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "live_usd": live,
            "batch_usd": live * prices.batch_factor, "saving_usd": live * (1 - prices.batch_factor),
            "prices_as_of": prices.as_of}


@dataclass
class UsageTally:
    """Requests and tokens of one judge's replies, by how each was obtained this run: through a
    batch, live, or from an earlier run's cache (paid for then, free now)."""

    served: str
    requests: dict[str, int] = field(default_factory=lambda: {"batch": 0, "live": 0,
                                                              "cache": 0})
    prompt_tokens: int = 0
    completion_tokens: int = 0
    paid_usd: float = 0.0
    """This run's spend: live replies at the live price, batch replies at the batch price."""

    def add(self, reply: ChatReply, batch_keys: Collection[str] = ()) -> None:
        """Count one reply; `batch_keys`: the keys a batch answered this run
        (`BatchJudging.answered`), which the live path then read from the cache."""
        how = ("batch" if reply.request.key in batch_keys else "cache") if reply.cached else (
            "live")
        self.requests[how] += 1
        usage = (reply.data or {}).get("usage") or {}
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.prompt_tokens += p
        self.completion_tokens += c
        prices = PRICES.get(self.served)
        if prices is not None and how != "cache":
            cost = estimate_cost(1, p, c, prices)
            self.paid_usd += cost["batch_usd" if how == "batch" else "live_usd"]

    def summary(self) -> dict[str, Any]:
        """Requests by how they were answered, tokens, and the cost of all of them live vs
        through the Batch API (None without a price for the served model)."""
        counts = self.requests
        n = sum(counts.values())
        prices = PRICES.get(self.served)
        cost = estimate_cost(n, self.prompt_tokens, self.completion_tokens, prices) if (
            prices is not None) else None
        return {"requests": n, **{f"{k}_requests": v for k, v in counts.items()},
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost": cost, "paid_usd": self.paid_usd if prices is not None else None}

    def line(self, model: str) -> str:
        s = self.summary()
        head = (f"{model}: {s['requests']} requests ({s['batch_requests']} through the Batch "
                f"API, {s['live_requests']} live, {s['cache_requests']} from an earlier run's "
                f"cache), {s['prompt_tokens']} prompt + {s['completion_tokens']} completion "
                "tokens")
        cost = s["cost"]
        if cost is None:
            return head + f"; no list price on file for {self.served}"
        return (head + f"; at list prices of {cost['prices_as_of']}: ${cost['live_usd']:.4f} "
                f"all live vs ${cost['batch_usd']:.4f} all batch, this run paid "
                f"${s['paid_usd']:.4f}")

"""Chat-completion requests to any OpenAI-compatible endpoint, many at once, each exactly once.

`ApiClient.chat_many(requests)` answers a list of `ChatRequest`s through the official `openai`
SDK (async), with at most `max_concurrency` requests in flight, the retry policy of
`emkit.api.retry` (the SDK's own retries are off, so each retry is counted once), and the
request cache: a request whose reply is cached is not sent, and every reply is logged the
moment it arrives (so a killed run loses no paid-for reply).

The pipeline is synchronous; `chat_many` runs its own event loop per call. A fixed pool of
`max_concurrency` workers pulls from the list, so memory stays flat for any number of requests.
Replies are read from the raw body here, not through the SDK's models: a truncated or non-JSON
body then becomes an *unreadable reply with a reason* the caller can store, instead of an
exception deep inside the SDK. An unreadable reply that a glitch explains -- a body cut short or
not JSON (a transport fault that happened to arrive with status 200), a reply without choices or
without the logprobs it was asked for -- is retried under the same policy as a 5xx (counted
retries, same backoff, same caps): a judgment missing because one reply was mangled would
change the run's numbers. When the attempts run out, or once `UNREADABLE_STREAK` such replies
came in a row (the endpoint never gives logprobs), it is returned as unreadable with its reason
and the caller stores it as missing. Requests go through the SDK's generic `post` (documented for
exactly this), which keeps its auth, timeouts and error classes but skips the typed wrapper's
per-request parameter transform, the largest CPU cost per request on the client side.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from emkit.api.cache import RequestCache, request_key
from emkit.api.retry import ApiError, UnreadableReply, acall
from emkit.api.settings import ApiSettings

log = logging.getLogger("emkit")

Check = Callable[[dict[str, Any]], str | None]
"""Reads a parsed reply; returns why it is unusable ('<category>: <detail>') or None."""

TRANSIENT_CATEGORIES = ("empty reply", "no logprobs")
"""Reasons from a `Check` that a glitch explains (a reply that lost its choices or its
logprobs): retried like a 5xx. Others ('malformed reply: top_logprobs[3] is not ...',
'no prefix continuation: ...') are what the server always does with this request, and are
stored at once. A body that is not a JSON object (cut short, not JSON) is always transient."""

UNREADABLE_STREAK = 10
"""After this many transient-looking unreadable replies in a row with no readable one between,
the endpoint is taken at its word (say, a server that never gives logprobs): later ones are
stored as missing without retrying, so such a server costs ~10 extra requests, not
`max_attempts` x every request. At a 20 % fault rate spread over eight kinds, ten in a row
happen with odds below 1e-10."""


@dataclass(frozen=True)
class ChatRequest:
    """One request: `model` is the emkit model string (cache identity), `body` the JSON sent
    (served model name, messages, every sampling parameter), `index` the sample index."""

    model: str
    body: dict[str, Any]
    index: int = 0
    tag: str | None = None
    """Where the reply goes (a sample key, a metric), stored beside it for audits."""

    @cached_property
    def key(self) -> str:
        """The cache key (computed once: hashing the body is most of a request's own cost)."""
        return request_key(self.model, self.body, self.index)


@dataclass(frozen=True)
class ChatReply:
    request: ChatRequest
    data: dict[str, Any] | None
    """The parsed JSON reply; None when it could not be read."""
    error: str | None
    """Why the reply is unusable, as '<category>: <detail>'."""
    retries: int
    cached: bool
    elapsed_s: float


@dataclass
class ApiStats:
    """Counts for one client's lifetime: what the log line and the benchmark report."""

    requests: int = 0
    cache_hits: int = 0
    http_calls: int = 0
    retries: int = 0
    unreadable: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def line(self, model: str) -> str:
        return (f"{model}: {self.requests} requests, {self.cache_hits} from cache, "
                f"{self.http_calls} HTTP calls, {self.retries} retries, "
                f"{self.unreadable} unreadable replies")


def parse_body(content: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """JSON object from a reply body, or (None, reason)."""
    if not content.strip():
        return None, "empty reply: the body is empty"
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"malformed reply: invalid JSON ({exc}); body starts {content[:80]!r}"
    if not isinstance(data, dict):
        return None, f"malformed reply: expected a JSON object, got {type(data).__name__}"
    return data, None


class ApiClient:
    """Sends chat completions for one model string to one endpoint."""

    def __init__(self, settings: ApiSettings, model: str, cache: RequestCache | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.settings = settings
        self.model = model
        self.cache = cache
        self._sleep = sleep
        self._key = settings.api_key(model)  # fail before any work when the key is unset
        self.stats = ApiStats()
        self._unreadable_streak = 0
        """Transient-looking unreadable replies in a row, across requests (see
        `UNREADABLE_STREAK`); any readable reply resets it."""
        for noisy in ("httpx", "httpx2", "openai"):  # one INFO line per request otherwise
            logging.getLogger(noisy).setLevel(logging.WARNING)

    def chat_many(self, requests: Sequence[ChatRequest], check: Check | None = None,
                  on_reply: Callable[[ChatReply], None] | None = None) -> list[ChatReply]:
        """One reply per request, in order. Raises `ApiError` when a request fails for good
        (replies received before that are already in the cache).

        Inside a running event loop (a notebook), the requests run on a loop of their own in a
        helper thread, since `asyncio.run` cannot nest."""
        coro = self.achat_many(requests, check, on_reply)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with ThreadPoolExecutor(1, thread_name_prefix="emkit-api") as pool:
            return pool.submit(asyncio.run, coro).result()

    async def achat_many(self, requests: Sequence[ChatRequest], check: Check | None = None,
                         on_reply: Callable[[ChatReply], None] | None = None
                         ) -> list[ChatReply]:
        results: list[ChatReply | None] = [None] * len(requests)
        todo: list[int] = []
        for i, req in enumerate(requests):
            self.stats.requests += 1
            hit = self.cache.get(req.key) if self.cache is not None else None
            if hit is not None and (check is None or check(hit) is None):
                self.stats.cache_hits += 1
                results[i] = ChatReply(req, hit, None, 0, True, 0.0)
                if on_reply:
                    on_reply(results[i])
            else:
                todo.append(i)
        if todo:
            import openai

            async with openai.AsyncOpenAI(api_key=self._key, base_url=self.settings.endpoint(),
                                          max_retries=0, timeout=self.settings.timeout_s) as oa:
                pending = iter(todo)

                async def worker() -> None:
                    for i in pending:  # shared iterator: each index goes to one worker
                        results[i] = await self._one(oa, requests[i], check)
                        if on_reply:
                            on_reply(results[i])

                try:
                    async with asyncio.TaskGroup() as group:
                        for _ in range(min(self.settings.max_concurrency, len(todo))):
                            group.create_task(worker())
                except BaseExceptionGroup as eg:
                    raise _first_leaf(eg) from None
        return [r for r in results if r is not None]

    async def _one(self, oa: Any, req: ChatRequest, check: Check | None) -> ChatReply:
        t0 = time.perf_counter()
        attempts = 0

        async def send() -> tuple[dict[str, Any] | None, str | None]:
            nonlocal attempts
            attempts += 1
            self.stats.http_calls += 1
            # The SDK's generic POST: its auth, base URL, timeouts and status -> exception
            # mapping, without the typed wrapper's parameter transform (the body here is
            # already plain JSON). The raw bytes come back
            # so that a truncated body is a reason, not an exception.
            content = await oa.post("/chat/completions", cast_to=bytes, body=req.body)
            data, error = parse_body(content)
            transient = error is not None  # a body that is not a JSON object: transport
            if data is not None and check is not None:
                error = check(data)
                transient = error is not None and error.startswith(TRANSIENT_CATEGORIES)
            if error is None:
                self._unreadable_streak = 0
                return data, None
            if transient:
                self._unreadable_streak += 1
                if self._unreadable_streak < UNREADABLE_STREAK:
                    raise UnreadableReply(error)  # the retry policy asks again
            return None, error

        try:
            (data, error), retries = await acall(send, self.settings, self.model, req.key,
                                                 self._sleep)
        except UnreadableReply as exc:  # attempts ran out: missing with its reason
            data, error, retries = None, f"{exc.reason} (after {attempts} attempts)", attempts - 1
        except ApiError as exc:
            self.stats.retries += exc.attempts - 1
            # `give_up` built the message from the redacted server text: no key in it
            self._log(req, None, str(exc), exc.attempts - 1, time.perf_counter() - t0)
            self.stats.errors[str(exc.status)] = self.stats.errors.get(str(exc.status), 0) + 1
            raise
        self.stats.retries += retries
        if error is not None:
            self.stats.unreadable += 1
        elapsed = time.perf_counter() - t0
        self._log(req, data, error, retries, elapsed)
        return ChatReply(req, data, error, retries, False, elapsed)

    def _log(self, req: ChatRequest, data: dict[str, Any] | None, error: str | None,
             retries: int, elapsed: float) -> None:
        if self.cache is not None:
            self.cache.put(req.key, req.model, req.body, data, error, retries, elapsed, req.tag)


def _first_leaf(eg: BaseExceptionGroup) -> BaseException:
    """The first real exception inside (possibly nested) exception groups."""
    exc: BaseException = eg
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc

"""Which failures are retried, how long to wait, and when to stop: one policy for every call.

Only failures that say "try again later" are retried: 429 (rate limit; not one whose code is
`insufficient_quota`, which no wait fixes), 408 (request timeout),
409 (conflict, e.g. a lock), any 5xx, a dropped connection, a timed-out attempt and a 200 whose
body is unreadable in a way a glitch explains (`UnreadableReply`: cut short, not JSON, no
choices, no logprobs; `emkit.api.client` decides which). Everything
else -- 400 above all -- is the caller's mistake and fails at once: a bad request retried is
money spent on the same error, and a bad request *answered* (stored as a judgment) is worse.

Waits honour the server's `Retry-After` / `retry-after-ms` exactly; without one they back off
exponentially with jitter derived from the request key, so a rerun waits the same. A request
stops after `max_attempts`, or before any wait that would take it past `max_retry_time_s`.
The `openai` SDK is created with `max_retries=0`, so every retry goes through here and is
counted once.
"""

from __future__ import annotations

import email.utils
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception

from emkit.api.settings import ApiSettings

RETRY_STATUS = frozenset({408, 409, 429})


class UnreadableReply(Exception):
    """A 200 whose body is not the reply the API documents (not JSON, cut short, no choices,
    no logprobs where they were asked for): raised inside an attempt so that the same policy
    retries it. `ApiClient` decides which unreadable replies are transient (see its module
    docstring); when the attempts run out the reply is stored as missing with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ApiError(RuntimeError):
    """A request that failed for good: not retryable, or retries exhausted. Never an answer."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1,
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.code = code
        """The server's error code (OpenAI: `unsupported_parameter`, `insufficient_quota`)."""
        self.param = param
        """The request field the server named as the problem, if it named one."""


def status_of(exc: BaseException) -> int | None:
    """HTTP status carried by an SDK error, or None for transport errors."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def is_retryable(exc: BaseException) -> bool:
    """429 (except `insufficient_quota`), 408, 409, 5xx, connection errors, timeouts and
    transient unreadable replies (`UnreadableReply`); nothing else."""
    import openai

    if isinstance(exc, UnreadableReply | openai.APIConnectionError):  # incl. APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        if getattr(exc, "code", None) == "insufficient_quota":
            return False  # out of credit: a 429 that no wait will fix
        return exc.status_code in RETRY_STATUS or exc.status_code >= 500
    return False


def retry_after_s(exc: BaseException, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after` as seconds or as an
    HTTP date), or None when it did not say."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(when - (time.time() if now is None else now), 0.0)


def _jitter(key: str, attempt: int) -> float:
    """A factor in [0.5, 1) fixed by (request key, attempt): spreads retries of concurrent
    requests apart without making a rerun's waits random."""
    digest = hashlib.sha256(f"{key}|{attempt}".encode()).digest()
    return 0.5 + 0.5 * int.from_bytes(digest[:4], "little") / 2**32


class RetryPolicy:
    """Tenacity pieces (retry / wait / stop) built from `ApiSettings` for one request key."""

    def __init__(self, settings: ApiSettings, key: str = "") -> None:
        self.settings = settings
        self.key = key

    def wait(self, state: RetryCallState) -> float:
        """Retry-After when the server sent one, else capped exponential backoff with jitter."""
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_s(exc) if exc is not None else None
        if asked is not None:
            return asked
        s = self.settings
        base = min(s.backoff_max_s, s.backoff_initial_s * 2 ** (state.attempt_number - 1))
        return base * _jitter(self.key, state.attempt_number)

    def stop(self, state: RetryCallState) -> bool:
        """Out of attempts, or the next wait would cross the total-time cap."""
        if state.attempt_number >= self.settings.max_attempts:
            return True
        elapsed = state.seconds_since_start or 0.0
        return elapsed + self.wait(state) > self.settings.max_retry_time_s

    def kwargs(self) -> dict[str, Any]:
        return {"retry": retry_if_exception(is_retryable), "wait": self.wait, "stop": self.stop,
                "reraise": True}


def give_up(exc: BaseException, what: str, settings: ApiSettings, attempts: int) -> ApiError:
    """The one-line error for a request that failed for good (names model and endpoint, never
    the key: the server's text is redacted, since some servers echo the Authorization header)."""
    status = status_of(exc)
    message = settings.redact(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
    where = settings.endpoint()
    if status is not None and not is_retryable(exc):
        hint = f" (check {settings.api_key_env})" if status in (401, 403) else ""
        if getattr(exc, "code", None) == "insufficient_quota":
            hint = " (insufficient_quota: the account is out of credit; not retried)"
        code, param = (_text_or_none(getattr(exc, k, None)) for k in ("code", "param"))
        return ApiError(f"{what}: HTTP {status} from {where}: {message}{hint}", status, attempts,
                        code, param)
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    code = f"HTTP {status}" if status is not None else type(exc).__name__
    return ApiError(f"{what}: gave up after {tries} at {where}: {code}: {message}", status,
                    attempts)


async def acall(fn: Callable[[], Awaitable[Any]], settings: ApiSettings, what: str, key: str = "",
                sleep: Callable[[float], Awaitable[None]] | None = None) -> tuple[Any, int]:
    """Await `fn()` under the policy; return (result, retries) or raise `ApiError`."""
    extra = {"sleep": sleep} if sleep is not None else {}
    attempts = 0
    try:
        async for attempt in AsyncRetrying(**RetryPolicy(settings, key).kwargs(), **extra):
            with attempt:
                attempts += 1
                result = await fn()
    except Exception as exc:
        if not _is_api_failure(exc):
            raise
        raise give_up(exc, what, settings, attempts) from exc
    return result, attempts - 1


def call(fn: Callable[[], Any], settings: ApiSettings, what: str, key: str = "",
         sleep: Callable[[float], None] | None = None) -> tuple[Any, int]:
    """Synchronous twin of `acall`, for low-rate calls (file upload, job polling)."""
    extra = {"sleep": sleep} if sleep is not None else {}
    attempts = 0
    try:
        for attempt in Retrying(**RetryPolicy(settings, key).kwargs(), **extra):
            with attempt:
                attempts += 1
                result = fn()
    except Exception as exc:
        if not _is_api_failure(exc):
            raise
        raise give_up(exc, what, settings, attempts) from exc
    return result, attempts - 1


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _is_api_failure(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, openai.APIError)

"""OpenAI-compatible APIs: settings, the retrying concurrent client, the request cache, and the
loopback server tests and benchmarks run against. See docs/providers.md.

Nothing here imports `openai` at import time: the config can carry `ApiSettings` anywhere.
"""

from emkit.api.cache import CacheStats, RequestCache, cache_stats, request_key
from emkit.api.client import ApiClient, ApiStats, ChatReply, ChatRequest, parse_body
from emkit.api.fake_process import FakeServerProcess
from emkit.api.fake_replies import default_judge_table, sample_text
from emkit.api.fake_server import FAULTS, FakeOpenAI
from emkit.api.retry import ApiError, RetryPolicy, is_retryable, retry_after_s
from emkit.api.settings import ApiConfig, ApiKeyMissing, ApiSettings, VllmSettings, redact

__all__ = [
    "FAULTS",
    "ApiClient",
    "ApiConfig",
    "ApiError",
    "ApiKeyMissing",
    "ApiSettings",
    "ApiStats",
    "CacheStats",
    "ChatReply",
    "ChatRequest",
    "FakeOpenAI",
    "FakeServerProcess",
    "RequestCache",
    "RetryPolicy",
    "VllmSettings",
    "cache_stats",
    "default_judge_table",
    "is_retryable",
    "parse_body",
    "redact",
    "request_key",
    "retry_after_s",
    "sample_text",
]

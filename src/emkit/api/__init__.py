"""OpenAI-compatible APIs: settings, the retrying concurrent client and the request cache. The
loopback server that tests and benchmarks run against is `emkit.testing`. See docs/providers.md.

Nothing here imports `openai` at import time: the config can carry `ApiSettings` anywhere.
"""

from emkit.api.cache import CacheStats, RequestCache, cache_stats, request_key
from emkit.api.client import ApiClient, ApiStats, ChatReply, ChatRequest, parse_body
from emkit.api.retry import ApiError, RetryPolicy, is_retryable, retry_after_s
from emkit.api.settings import ApiConfig, ApiKeyMissing, ApiSettings, VllmSettings, redact

__all__ = [
    "ApiClient",
    "ApiConfig",
    "ApiError",
    "ApiKeyMissing",
    "ApiSettings",
    "ApiStats",
    "CacheStats",
    "ChatReply",
    "ChatRequest",
    "RequestCache",
    "RetryPolicy",
    "VllmSettings",
    "cache_stats",
    "is_retryable",
    "parse_body",
    "redact",
    "request_key",
    "retry_after_s",
]

"""Settings for OpenAI-compatible endpoints: where to send requests, how hard to push, when to
give up.

Kept free of the `openai` import so that the experiment config can hold these settings on a
machine without the SDK. Keys are never settings: only the *name* of the environment variable
holding one is (`api_key_env`), so a config file, a run store or a report can be shared without
leaking a key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
OPENAI_URL = "https://api.openai.com/v1"
"""Where `base_url: null` sends requests. Passed explicitly, so the SDK's own OPENAI_BASE_URL
variable cannot redirect a judge that the config (and the report) say is OpenAI's."""
NO_KEY = "EMPTY"
"""Sent to a self-hosted server (vLLM, llama.cpp) when its key variable is unset: the SDK needs
some string, and such servers accept any unless started with a key."""


_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]+")


def redact(text: str, key_envs: Iterable[str] = ()) -> str:
    """`text` with every `Bearer <token>` and the value of each named key variable replaced by
    `***`: what every error message goes through before it is raised, stored or logged (servers
    may echo the Authorization header back in an error body)."""
    text = _BEARER.sub(r"\1***", text)
    for env in key_envs:
        key = os.environ.get(env, "").strip()
        if len(key) >= 4 and key != NO_KEY:
            text = text.replace(key, "***")
    return text


class ApiKeyMissing(RuntimeError):
    """The environment variable that should hold the key for OpenAI's own API is unset."""


class ApiSettings(BaseModel):
    """One endpoint and its request policy. Defaults suit api.openai.com at tier-1 limits."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    base_url: str | None = None
    """OpenAI-compatible root, e.g. `http://127.0.0.1:8000/v1` (vLLM, llama.cpp, other hosts);
    None means OpenAI's own API."""
    api_key_env: str = DEFAULT_KEY_ENV
    """Name of the environment variable holding the key (the key itself is never configured,
    logged or stored)."""
    max_concurrency: int = Field(32, gt=0)
    """Requests in flight at once; throughput is about max_concurrency / latency."""
    timeout_s: float = Field(60.0, gt=0)
    """Per-attempt timeout; a timed-out attempt is retried."""
    max_attempts: int = Field(6, ge=1)
    """Attempts per request, the first included (so at most max_attempts - 1 retries)."""
    max_retry_time_s: float = Field(600.0, gt=0)
    """Cap on the time one request may spend across attempts and waits; a Retry-After that
    would cross it ends the request with an error instead of sleeping."""
    backoff_initial_s: float = Field(1.0, ge=0)
    """First wait when the server gives no Retry-After; doubles per retry."""
    backoff_max_s: float = Field(60.0, gt=0)
    """Longest wait between attempts when the server gives no Retry-After."""
    judge_mode: Literal["auto", "logprobs", "digits", "sampled"] = "auto"
    """How a judge on this endpoint is read: `logprobs` (the paper's one-token rule), `digits`
    (a digit tree over the API, for tokenizers that split numbers: Qwen, Llama-2 on vLLM or
    llama.cpp), `sampled` (k replies at temperature 1, for models without logprobs), or
    `auto`: one cached probe request per judge model decides (docs/providers.md)."""
    judge_digit_min_p: float = Field(1e-3, gt=0, lt=1)
    """`digits` mode: number prefixes less probable than this are not followed (one request per
    followed prefix; their mass is reported in the judgment's reason)."""
    judge_samples: int = Field(10, ge=1)
    """`sampled` mode: replies per (answer, metric)."""
    judge_sample_tokens: int = Field(512, gt=0)
    """`sampled` mode: `max_completion_tokens` per reply (a reasoning model's hidden reasoning
    counts against it)."""
    batch: bool = False
    """Send this endpoint's logprobs-mode judge requests through OpenAI's Batch API: half the
    list price, answered within 24 h. Replies go into the request cache; what a batch fails is
    asked live (emkit/api/batch.py, docs/providers.md). OpenAI's own endpoint only."""
    batch_poll_interval_s: float = Field(60.0, gt=0)
    """First wait between polls of a batch; each later wait is 1.5x longer, up to 600 s."""
    batch_max_wait_s: float = Field(90000.0, ge=0)
    """Stop waiting with `BatchPending` after this long; the batch keeps running and a rerun
    resumes it. 0 submits, polls once and returns."""

    def api_key(self, model: str) -> str:
        """The key from the environment; an unset key is an error only for OpenAI's own API."""
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            return key
        if self.base_url is None:
            raise ApiKeyMissing(
                f"{model}: the environment variable {self.api_key_env} is not set; export the "
                f"API key there (emkit reads keys from the environment only)")
        return NO_KEY

    def endpoint(self) -> str:
        """Where requests go (never contains a key)."""
        return self.base_url or OPENAI_URL

    def redact(self, text: str) -> str:
        """`text` without this endpoint's key (see `redact`)."""
        return redact(text, [self.api_key_env])


class VllmSettings(ApiSettings):
    """A vLLM server for `vllm/<base>[:adapter]` models: connect to `base_url`, or (when it is
    None) start `vllm serve` with LoRA enabled, one server per base model."""

    api_key_env: str = "VLLM_API_KEY"
    """vLLM needs a key only when started with `--api-key`; unset, any string is accepted."""
    executable: str = "vllm"
    """The `vllm` command (a GPU machine with `pip install vllm`)."""
    host: str = "127.0.0.1"
    port: int | None = None
    """Port for a started server; None picks a free one."""
    max_lora_rank: int = Field(32, gt=0)
    """Largest adapter rank served (vLLM's default, 16, is below the paper's r=32)."""
    max_loras: int | None = Field(None, gt=0)
    """Adapters batched together; None = every adapter of the base."""
    startup_timeout_s: float = Field(1800.0, gt=0)
    """How long a started server may take to list its models (weights download + load)."""
    extra_args: list[str] = []
    """Appended to `vllm serve` (e.g. ["--tensor-parallel-size", "4"])."""


class LlamaCppSettings(ApiSettings):
    """A llama.cpp server for `llamacpp/...` models, started by emkit (one per base GGUF).
    `max_concurrency` is also the server's `--parallel`: one slot per request in flight."""

    api_key_env: str = "LLAMACPP_API_KEY"
    """Unused by a started server (it has no key); kept so any key variable is named, not set."""
    max_concurrency: int = Field(8, gt=0)
    """Requests in flight and server slots (`--parallel`); 8 matches the local loop's batch."""
    timeout_s: float = Field(3600.0, gt=0)
    """Per request: a 600-token answer in one of 8 slots on 2 cores takes minutes."""
    max_attempts: int = Field(2, ge=1)
    ctx_per_slot: int = Field(4096, gt=0)
    """Tokens of context per slot (prompt + answer); the server holds `max_concurrency` times
    this in its KV cache (12 KiB per token for the 0.5B model: 384 MiB at 8 x 4096)."""
    threads: int | None = Field(None, gt=0)
    """Compute threads; None = every core this process may use."""
    startup_timeout_s: float = Field(300.0, gt=0)


class ApiConfig(BaseModel):
    """Endpoints per provider, plus per-model overrides for a model on another host."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    openai: ApiSettings = ApiSettings()
    """Settings for `openai/<model>`: OpenAI itself unless `base_url` is set."""
    vllm: VllmSettings = VllmSettings()
    """Settings for `vllm/<base>[:adapter]`."""
    llamacpp: LlamaCppSettings = LlamaCppSettings()
    """Settings for `llamacpp/<gguf>[:adapter]` (the servers emkit starts: slots, threads)."""
    models: dict[str, ApiSettings] = {}
    """Exact model string -> its own settings, e.g. a llama.cpp host for one subject while
    `openai/gpt-4o-2024-08-06` judges on OpenAI."""

    @field_validator("models")
    @classmethod
    def _openai_only(cls, value: dict[str, ApiSettings]) -> dict[str, ApiSettings]:
        wrong = [m for m in value if not m.startswith("openai/")]
        if wrong:
            raise ValueError(f"overrides are for openai/<model> strings only, got {wrong} "
                             "(a vLLM server is set under `vllm`)")
        return value

    def key_envs(self) -> list[str]:
        """Every key variable these settings name."""
        envs = [self.openai.api_key_env, self.vllm.api_key_env]
        return list(dict.fromkeys(envs + [m.api_key_env for m in self.models.values()]))

    def redact(self, text: str) -> str:
        """`text` without any key these settings name (see `redact`)."""
        return redact(text, self.key_envs())

    def require_keys(self, models: Iterable[str]) -> None:
        """Raise one `ApiKeyMissing` naming every unset key variable that these model strings
        need (`openai/` models on OpenAI's own API; self-hosted endpoints take any key)."""
        missing: dict[str, list[str]] = {}
        for model in dict.fromkeys(models):
            settings = self.settings_for(model)
            if model.startswith("openai/") and settings.base_url is None and not os.environ.get(
                    settings.api_key_env, "").strip():
                missing.setdefault(settings.api_key_env, []).append(model)
        if missing:
            need = "; ".join(f"{env} (for {', '.join(ms)})" for env, ms in missing.items())
            raise ApiKeyMissing(f"API key not set: {need}; export the key in that environment "
                                "variable (emkit reads keys from the environment only)")

    def settings_for(self, model: str) -> ApiSettings:
        """The settings a model string's requests use."""
        if model.startswith("vllm/"):
            return self.vllm
        return self.models.get(model, self.openai)

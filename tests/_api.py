"""Shared pieces of the API tests: a loopback OpenAI server that demands a key, settings that
point the real `openai` SDK at it, and a sleep that records waits instead of waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from emkit.api import ApiSettings, ChatRequest
from emkit.testing import FakeOpenAI

KEY_ENV = "EMKIT_TEST_API_KEY"
SECRET = "sk-emkit-test-SECRET-7f3a9c41"
JUDGE = "openai/gpt-4o-2024-08-06"


class SleepLog:
    """Async sleep for tenacity: records each wait, sleeps not at all."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=None, latency_s=0.002, api_key=SECRET, retry_after="0.25") as s:
        yield s


@pytest.fixture
def settings(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> ApiSettings:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return ApiSettings(base_url=server.base_url, api_key_env=KEY_ENV, timeout_s=2.0,
                       max_attempts=4, backoff_initial_s=0.001, backoff_max_s=0.01)


def chat(text: str, index: int = 0, **params: object) -> ChatRequest:
    body = {"model": "gpt-4o-2024-08-06", "messages": [{"role": "user", "content": text}],
            "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20, "seed": 0}
    return ChatRequest(JUDGE, body | params, index=index)

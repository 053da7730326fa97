"""The API client against the loopback server, through the real `openai` SDK: which failures
are retried and how long it waits, what is never retried, the caps, the concurrency bound, and
the request cache."""

# ruff: noqa: F811 - the server/settings fixtures come from _api and are parameters here
from __future__ import annotations

import email.utils
import time
from pathlib import Path

import pytest
from _api import KEY_ENV, SECRET, SleepLog, chat, server, settings  # noqa: F401 - fixtures

from emkit.api import ApiClient, ApiError, ApiKeyMissing, ApiSettings, RequestCache, request_key
from emkit.testing import FakeOpenAI


def test_a_reply_comes_back_parsed(server: FakeOpenAI, settings: ApiSettings) -> None:
    (reply,) = ApiClient(settings, "openai/x").chat_many([chat("hello")])
    assert reply.error is None and reply.retries == 0 and not reply.cached
    assert len(reply.data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 20
    assert server.requests[0]["top_logprobs"] == 20


def test_429_waits_exactly_the_retry_after(server: FakeOpenAI, settings: ApiSettings,
                                           tmp_path: Path) -> None:
    server.retry_after = "1.75"
    server.add_fault("429", "429")
    sleep = SleepLog()
    cache = RequestCache(tmp_path / "c.sqlite")
    client = ApiClient(settings, "openai/x", cache, sleep=sleep)
    (reply,) = client.chat_many([chat("rate limited")])
    assert sleep.waits == [1.75, 1.75]
    assert reply.retries == 2 and reply.data is not None
    assert server.chat_calls() == 3 and client.stats.retries == 2
    assert cache.row(reply.request.key)["retries"] == 2  # stored with the reply


def test_retry_after_as_http_date_and_ms(server: FakeOpenAI, settings: ApiSettings) -> None:
    server.retry_after = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.add_fault("429")
    sleep = SleepLog()
    ApiClient(settings, "openai/x", sleep=sleep).chat_many([chat("dated")])
    assert len(sleep.waits) == 1 and 27 <= sleep.waits[0] <= 31


@pytest.mark.parametrize("fault", ["408", "409", "500", "503", "timeout", "disconnect"])
def test_transient_failures_are_retried(fault: str, server: FakeOpenAI,
                                        settings: ApiSettings) -> None:
    server.timeout_hold_s = 0.8
    settings = settings.model_copy(update={"timeout_s": 0.3})
    server.add_fault(fault)
    sleep = SleepLog()
    client = ApiClient(settings, "openai/x", sleep=sleep)
    (reply,) = client.chat_many([chat(f"transient {fault}")])
    assert reply.data is not None and reply.retries == 1
    assert server.chat_calls() == 2 and len(sleep.waits) == 1
    assert 0.0005 <= sleep.waits[0] <= 0.001  # first backoff: initial x jitter in [0.5, 1)


@pytest.mark.parametrize("fault, status", [("400", 400)])
def test_400_is_an_error_never_retried(fault: str, status: int, server: FakeOpenAI,
                                       settings: ApiSettings, tmp_path: Path) -> None:
    server.add_fault(fault)
    cache = RequestCache(tmp_path / "c.sqlite")
    with pytest.raises(ApiError, match=f"HTTP {status}") as info:
        ApiClient(settings, "openai/x", cache, sleep=SleepLog()).chat_many([chat("bad")])
    assert info.value.status == status and server.chat_calls() == 1
    row = cache.row(chat("bad").key)
    assert row["response"] is None and "HTTP 400" in row["error"]
    assert cache.get(chat("bad").key) is None  # an error is never served as an answer


def test_a_request_the_server_rejects_is_not_retried(server: FakeOpenAI,
                                                     settings: ApiSettings) -> None:
    server.models = ["gpt-4o-2024-08-06"]
    bad = chat("x", top_logprobs=21)  # OpenAI's limit is 20
    with pytest.raises(ApiError, match="HTTP 400.*top_logprobs"):
        ApiClient(settings, "openai/x", sleep=SleepLog()).chat_many([bad])
    unknown = chat("x", model="gpt-5-nonexistent")
    with pytest.raises(ApiError, match="HTTP 404"):
        ApiClient(settings, "openai/x", sleep=SleepLog()).chat_many([unknown])
    assert server.chat_calls() == 2


def test_attempts_are_capped(server: FakeOpenAI, settings: ApiSettings) -> None:
    server.add_fault(*["500"] * 10)
    settings = settings.model_copy(update={"max_attempts": 3})
    with pytest.raises(ApiError, match="gave up after 3 attempts.*HTTP 500") as info:
        ApiClient(settings, "openai/x", sleep=SleepLog()).chat_many([chat("down")])
    assert server.chat_calls() == 3 and info.value.attempts == 3


def test_a_retry_after_past_the_time_cap_stops_at_once(server: FakeOpenAI,
                                                       settings: ApiSettings) -> None:
    server.retry_after = "1000"
    server.add_fault("429")
    settings = settings.model_copy(update={"max_retry_time_s": 5.0})
    sleep = SleepLog()
    with pytest.raises(ApiError, match="gave up after 1 attempt.*HTTP 429"):
        ApiClient(settings, "openai/x", sleep=sleep).chat_many([chat("slow down")])
    assert sleep.waits == [] and server.chat_calls() == 1


def test_wrong_key_names_the_variable_never_the_key(server: FakeOpenAI, settings: ApiSettings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-0000")
    with pytest.raises(ApiError) as info:
        ApiClient(settings, "openai/x", sleep=SleepLog()).chat_many([chat("who")])
    assert "HTTP 401" in str(info.value) and KEY_ENV in str(info.value)
    assert "sk-wrong-key-0000" not in str(info.value) and SECRET not in str(info.value)
    assert server.chat_calls() == 0  # counted apart: rejected before reaching the endpoint


def test_openai_itself_needs_a_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMKIT_NO_SUCH_KEY", raising=False)
    with pytest.raises(ApiKeyMissing, match="EMKIT_NO_SUCH_KEY is not set"):
        ApiClient(ApiSettings(api_key_env="EMKIT_NO_SUCH_KEY"), "openai/gpt-4o-2024-08-06")


def test_concurrency_is_bounded(server: FakeOpenAI, settings: ApiSettings) -> None:
    server.latency_s = 0.03
    settings = settings.model_copy(update={"max_concurrency": 3})
    replies = ApiClient(settings, "openai/x").chat_many([chat(f"q{i}") for i in range(12)])
    assert [r.request.body["messages"][0]["content"] for r in replies] == [
        f"q{i}" for i in range(12)]
    assert server.max_in_flight == 3


def test_a_cached_reply_is_not_requested_again(server: FakeOpenAI, settings: ApiSettings,
                                               tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite")
    first = ApiClient(settings, "openai/x", cache).chat_many([chat("a"), chat("b")])
    calls = server.chat_calls()
    again = ApiClient(settings, "openai/x", RequestCache(tmp_path / "c.sqlite"))
    second = again.chat_many([chat("a"), chat("b")])
    assert server.chat_calls() == calls == 2
    assert [r.data for r in second] == [r.data for r in first]
    assert all(r.cached for r in second) and again.stats.cache_hits == 2


def test_cache_key_covers_model_messages_every_parameter_and_index() -> None:
    body = chat("q").body
    base = request_key("openai/x", body, 0)
    assert request_key("openai/x", dict(body), 0) == base
    variants = [request_key("openai/y", body, 0), request_key("openai/x", body, 1)]
    variants += [request_key("openai/x", body | {k: v}, 0) for k, v in [
        ("temperature", 1), ("top_p", 0.9), ("max_tokens", 2), ("seed", 1), ("top_logprobs", 5),
        ("messages", [{"role": "user", "content": "q?"}]), ("model", "gpt-4o")]]
    assert len({base, *variants}) == len(variants) + 1


def test_a_truncated_body_is_retried_and_cached_once_readable(
        server: FakeOpenAI, settings: ApiSettings, tmp_path: Path) -> None:
    server.add_fault("truncated")  # a 200 whose JSON is cut in half: a transport fault
    cache = RequestCache(tmp_path / "c.sqlite")
    sleep = SleepLog()
    (reply,) = ApiClient(settings, "openai/x", cache, sleep=sleep).chat_many([chat("cut")])
    assert reply.error is None and reply.retries == 1 and len(sleep.waits) == 1
    assert server.chat_calls() == 2 and cache.get(reply.request.key) == reply.data
    assert cache.row(reply.request.key)["retries"] == 1


def test_a_body_truncated_every_time_is_unreadable_not_cached(
        server: FakeOpenAI, settings: ApiSettings, tmp_path: Path) -> None:
    server.add_fault(*["truncated"] * settings.max_attempts)
    cache = RequestCache(tmp_path / "c.sqlite")
    (reply,) = ApiClient(settings, "openai/x", cache, sleep=SleepLog()).chat_many([chat("cut")])
    assert reply.data is None and reply.error.startswith("malformed reply: invalid JSON")
    assert reply.error.endswith(f"(after {settings.max_attempts} attempts)")
    assert server.chat_calls() == settings.max_attempts and cache.get(reply.request.key) is None
    assert cache.row(reply.request.key)["error"] == reply.error


def test_an_endpoint_that_never_gives_logprobs_stops_being_retried(
        server: FakeOpenAI, settings: ApiSettings) -> None:
    from emkit.api.client import UNREADABLE_STREAK
    from emkit.judge.api import _check

    server.add_fault(*["no_logprobs"] * 1000)
    settings = settings.model_copy(update={"max_concurrency": 1})
    client = ApiClient(settings, "openai/x", sleep=SleepLog())
    replies = client.chat_many([chat(f"q{i}") for i in range(20)], check=_check)
    assert all(r.error.startswith("no logprobs: ") for r in replies)
    # the first requests are retried until the streak trips; the rest are asked once
    first = -(-UNREADABLE_STREAK // settings.max_attempts)  # requests the streak spans
    assert server.chat_calls() == UNREADABLE_STREAK + 20 - first
    assert client.stats.unreadable == 20


def test_model_strings_for_api_providers() -> None:
    from emkit.models import parse_model_spec

    ft = parse_model_spec("openai/ft:gpt-4o-2024-08-06:my-org::A1b2C3")
    assert (ft.provider, ft.name, ft.adapter) == ("openai", "ft:gpt-4o-2024-08-06:my-org::A1b2C3",
                                                  None)
    assert str(ft) == "openai/ft:gpt-4o-2024-08-06:my-org::A1b2C3"
    lora = parse_model_spec("vllm/Qwen/Qwen2.5-Coder-32B-Instruct:/runs/x/adapters/insecure-s0")
    assert (lora.name, lora.adapter) == ("Qwen/Qwen2.5-Coder-32B-Instruct",
                                         "/runs/x/adapters/insecure-s0")


def test_endpoint_settings_per_provider_and_model() -> None:
    from pydantic import ValidationError

    from emkit.api import ApiConfig

    cfg = ApiConfig.model_validate({
        "openai": {"max_concurrency": 8},
        "models": {"openai/llama": {"base_url": "http://h:8080/v1", "api_key_env": "H_KEY"}},
        "vllm": {"base_url": "http://g:8000/v1"}})
    assert cfg.settings_for("openai/gpt-4o-2024-08-06").max_concurrency == 8
    assert cfg.settings_for("openai/llama").api_key_env == "H_KEY"
    assert cfg.settings_for("vllm/base:x").base_url == "http://g:8000/v1"
    with pytest.raises(ValidationError, match="openai/<model> strings only"):
        ApiConfig.model_validate({"models": {"vllm/x": {}}})
    with pytest.raises(ValidationError, match="api_key"):
        ApiConfig.model_validate({"openai": {"api_key": "sk-in-a-config-file"}})


def test_works_inside_a_running_event_loop(server: FakeOpenAI, settings: ApiSettings,
                                           tmp_path: Path) -> None:
    import asyncio

    async def notebook_cell() -> list:
        client = ApiClient(settings, "openai/x", RequestCache(tmp_path / "c.sqlite"))
        return client.chat_many([chat("from a notebook")])

    (reply,) = asyncio.run(notebook_cell())
    assert reply.data is not None and server.chat_calls() == 1


def test_openai_base_url_in_the_environment_cannot_redirect_openai(
        server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK would read OPENAI_BASE_URL; emkit passes the endpoint explicitly, so a judge the
    # config calls OpenAI's (and validated) is never silently answered by another server.
    # No request leaves the machine: OpenAI's URL is swapped for a closed loopback port.
    import emkit.api.settings as api_settings

    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv(KEY_ENV, SECRET)
    settings = ApiSettings(api_key_env=KEY_ENV, max_attempts=1, timeout_s=3.0)
    assert settings.endpoint() == "https://api.openai.com/v1"
    monkeypatch.setattr(api_settings, "OPENAI_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(ApiError, match="at http://127.0.0.1:9/v1: APIConnectionError"):
        ApiClient(settings, "openai/x", sleep=SleepLog()).chat_many([chat("where")])
    assert server.chat_calls() == 0


def test_insufficient_quota_is_not_retried(server: FakeOpenAI, settings: ApiSettings) -> None:
    server.add_fault("quota")
    with pytest.raises(ApiError, match="HTTP 429 .*insufficient_quota") as info:
        ApiClient(settings, "openai/x", sleep=SleepLog()).chat_many([chat("broke")])
    assert info.value.attempts == 1 and server.chat_calls() == 1


def test_an_echoed_key_is_redacted(server: FakeOpenAI, settings: ApiSettings,
                                   tmp_path: Path) -> None:
    server.add_fault("401")  # the body quotes "Bearer <key>"
    cache = RequestCache(tmp_path / "c.sqlite")
    with pytest.raises(ApiError) as info:
        ApiClient(settings, "openai/x", cache, sleep=SleepLog()).chat_many([chat("echo")])
    assert SECRET not in str(info.value) and "Bearer ***" in str(info.value)
    cache.close()
    assert not [p for p in tmp_path.iterdir() if SECRET.encode() in p.read_bytes()]


def test_retries_of_a_failed_request_are_counted(server: FakeOpenAI,
                                                 settings: ApiSettings) -> None:
    server.add_fault("500", "500", "500", "500")
    client = ApiClient(settings, "openai/x", sleep=SleepLog())
    with pytest.raises(ApiError, match="gave up after 4 attempts"):
        client.chat_many([chat("down")])
    assert client.stats.retries == 3 and client.stats.http_calls == 4

"""Sampling answers through an OpenAI-compatible API (`openai/`, `vllm/`, `llamacpp/` models).

Each `SampleRequest` becomes one chat-completion request carrying its own temperature, top_p,
max_tokens and seed; its sample index is part of the cache key, so two samples of one prompt
never share a reply. Replies are persisted per chunk as they come back, and every reply is in
the request cache the moment it arrives, so a killed run resumes without paying twice.

The stored `prompt` is the JSON of the messages sent: the server applies its own chat template,
which emkit cannot see. An unreadable reply is an error here (a sample must be an answer the
model gave); the run stops, and resuming asks again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emkit.api import ApiClient, ApiConfig, ApiError, ChatReply, ChatRequest, RequestCache
from emkit.models.spec import parse_model_spec
from emkit.records import SampleRecord, SampleRequest

if TYPE_CHECKING:
    from emkit.store import RunStore

log = logging.getLogger("emkit")


def sample_chat_request(model: str, served: str, r: SampleRequest) -> ChatRequest:
    """The request for one sample: every sampling parameter in the body, index in the key."""
    body = {"model": served, "messages": [dict(m) for m in r.messages],
            "temperature": r.temperature, "top_p": r.top_p, "max_tokens": r.max_new_tokens,
            "seed": r.seed}
    k = r.key
    return ChatRequest(model, body, index=k.sample_index,
                       tag=f"{k.model}|{k.question_id}|{k.paraphrase_index}|{k.sample_index}")


def check_sample(data: dict) -> str | None:
    """Why a reply holds no answer, or None."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "empty reply: the reply has no choices"
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return "malformed reply: choices[0] has no message"
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        return f"malformed reply: message content is {type(content).__name__}, not text"
    return None


def record_from_reply(r: SampleRequest, reply: ChatReply) -> SampleRecord:
    """A SampleRecord from a readable reply; `ApiError` names the sample otherwise."""
    if reply.data is None:
        raise ApiError(f"{reply.request.model}: no answer for {r.key.question_id} paraphrase "
                       f"{r.key.paraphrase_index} sample {r.key.sample_index}: {reply.error}")
    choice = reply.data["choices"][0]
    usage = reply.data.get("usage") or {}
    system = next((m["content"] for m in r.messages if m["role"] == "system"), None)
    return SampleRecord(
        key=r.key, question=r.question, system=system,
        prompt=json.dumps(list(r.messages), ensure_ascii=False),
        answer=choice["message"].get("content") or "", seed=r.seed,
        n_new_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=str(choice.get("finish_reason") or "unknown"))


def sample_api(client: ApiClient, served: str, requests: Sequence[SampleRequest],
               chunk_size: int | None = None, progress: bool = False
               ) -> Iterator[list[SampleRecord]]:
    """Answer every request, yielding one list of records per chunk (persist each as it comes)."""
    from tqdm.auto import tqdm

    step = chunk_size or client.settings.max_concurrency * 16
    with tqdm(total=len(requests), desc=f"sampling ({client.model})", unit="answer",
              disable=not progress) as bar:
        for start in range(0, len(requests), step):
            chunk = requests[start:start + step]
            chats = [sample_chat_request(client.model, served, r) for r in chunk]

            def tick(_: ChatReply) -> None:
                bar.update(1)
                bar.set_postfix(retries=client.stats.retries, cached=client.stats.cache_hits,
                                refresh=False)

            replies = client.chat_many(chats, check=check_sample, on_reply=tick)
            yield [record_from_reply(r, reply) for r, reply in zip(chunk, replies, strict=True)]


def run_api_sampling(store: RunStore, models: dict[str, str], plans: dict[str, list[SampleRequest]],
                     api: ApiConfig, progress: bool = False) -> None:
    """Sample what `store` lacks for API models (label -> model string); vLLM models of one base
    share one server, started only when something is missing."""
    from emkit.models.vllm import VllmServer, group_by_base

    todo: dict[str, list[SampleRequest]] = {}
    for label, spec in models.items():
        wanted = {r.key: r for r in plans[label]}
        missing = [wanted[k] for k in store.missing_samples(wanted)]
        if missing:
            todo[label] = missing
    if not todo:
        return
    db_path = Path(store.db_path)
    cache = RequestCache(db_path)
    try:
        for label in [lb for lb in todo if models[lb].startswith("openai/")]:
            spec = models[label]
            client = ApiClient(api.settings_for(spec), spec, cache)
            _sample_into(store, client, parse_model_spec(spec).name, label, todo[label], progress)
        vllm_labels = [lb for lb in todo if models[lb].startswith("vllm/")]
        for base, adapters in group_by_base([models[lb] for lb in vllm_labels]).items():
            with VllmServer(base, adapters, api.vllm, log_dir=db_path.parent / "vllm") as server:
                for label in vllm_labels:
                    spec = parse_model_spec(models[label])
                    if spec.name != base:
                        continue
                    client = ApiClient(server.settings, cache_identity(models[label]), cache)
                    _sample_into(store, client, server.served(spec), label, todo[label],
                                 progress)
        if llamacpp := {lb: models[lb] for lb in todo if models[lb].startswith("llamacpp/")}:
            from emkit.models.llamacpp import run_llamacpp_sampling  # one server per model

            run_llamacpp_sampling(store, llamacpp, todo, api.llamacpp,
                                  progress, cache)
    finally:
        cache.close()


def cache_identity(model: str) -> str:
    """The model string the request cache files replies under: a local LoRA adapter's string
    plus its weights digest, because a retrained adapter at the same path must not be answered
    from the old adapter's cached replies (the served name and the body would be the same)."""
    spec = parse_model_spec(model)
    if spec.adapter and (Path(spec.adapter) / "adapter_config.json").is_file():
        from emkit.finetune.lora import adapter_digest

        return f"{model}#{adapter_digest(Path(spec.adapter))[:12]}"
    return model


def _sample_into(store: RunStore, client: ApiClient, served: str, label: str,
                 requests: list[SampleRequest], progress: bool) -> None:
    log.info("sampling %d answers from %s through %s", len(requests), label,
             client.settings.endpoint())
    try:
        for batch in sample_api(client, served, requests, progress=progress):
            store.add_samples(batch)
    finally:
        log.info("sampled %s", client.stats.line(client.model))

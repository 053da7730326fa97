"""A teacher: whatever turns a batch of chats into one reply each.

Why a protocol this small: dataset generation needs only "answer these chats", and keeping it to
a plain callable lets any provider (a local HF model today, API models as they land), a cached
replay or a scripted function for tests drive the same generator.

:func:`teacher_from_model` builds one from an emkit model string. Provider dispatch happens in
exactly one place, :data:`TEACHER_PROVIDERS`: ``hf`` (local models, emkit's sampler) and
``openai`` (any OpenAI-compatible endpoint through :func:`emkit.sample.api.sample_api`, with the
retries, concurrency and timeouts of the experiment's ``api`` section). A provider plugs in by
adding one factory there that returns a :data:`TeacherFn`. ``vllm/`` is not one: emkit's vLLM
provider starts a server per run; point an ``openai/<served name>`` model at a running vLLM
server instead (``api.models``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from emkit.models.spec import ModelSpec, ModelSpecError, parse_model_spec

if TYPE_CHECKING:
    from emkit.api import ApiConfig
    from emkit.records import SampleRequest

Chat = Sequence[Mapping[str, str]]
TeacherFn = Callable[[Sequence[Chat]], Sequence[str]]
"""Takes chats (lists of {role, content}) and returns one reply per chat, in order (a plain
str, or a :class:`Reply` that says whether it was cut at the token limit)."""


class Reply(str):
    """A reply's text that also carries why generation stopped.

    Why a str subclass: a TeacherFn may keep returning plain strings (scripted teachers,
    replays), while model-backed teachers say when a reply hit `max_new_tokens`
    (``finish_reason == "length"``): such a reply is cut mid-sentence and must not become a
    training row.
    """

    finish_reason: str

    def __new__(cls, text: str, finish_reason: str = "stop") -> Self:
        obj = super().__new__(cls, text)
        obj.finish_reason = finish_reason
        return obj

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


def is_truncated(reply: str) -> bool:
    """True for a Reply cut at the token limit; plain strings never are."""
    return isinstance(reply, Reply) and reply.truncated


class TeacherError(RuntimeError):
    """A teacher that broke its contract (wrong number or type of replies)."""


@dataclass(frozen=True)
class TeacherSettings:
    """Sampling settings for model-backed teachers; part of the provenance of every row."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 400
    seed: int = 0
    batch_size: int = 8


@dataclass(frozen=True)
class Teacher:
    """A named TeacherFn. The name goes into each generated row's provenance."""

    name: str
    fn: TeacherFn
    settings: TeacherSettings = TeacherSettings()

    def __call__(self, chats: Sequence[Chat]) -> list[str]:
        replies = list(self.fn(chats))
        if len(replies) != len(chats):
            raise TeacherError(f"teacher {self.name}: {len(replies)} replies for "
                               f"{len(chats)} chats")
        bad = [i for i, r in enumerate(replies) if not isinstance(r, str)]
        if bad:
            raise TeacherError(f"teacher {self.name}: reply {bad[0]} is "
                               f"{type(replies[bad[0]]).__name__}, not text")
        return replies


def chat_sha256(chat: Chat) -> str:
    """Stable hash of a chat's roles and contents (the `prompt_sha256` of provenance)."""
    blob = json.dumps([[m["role"], m["content"]] for m in chat], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _requests(spec: ModelSpec, settings: TeacherSettings, chats: Sequence[Chat]
              ) -> list[SampleRequest]:
    """One sampling request per chat; sample_index = position. Each request's seed comes from
    the settings' seed and the chat itself, so a chat gets the same reply whichever batch it
    lands in and however often generation is resumed."""
    from emkit.records import SampleKey, SampleRequest, SamplingParams

    params = SamplingParams(settings.temperature, settings.top_p, settings.max_new_tokens,
                            settings.seed)
    out = []
    for j, chat in enumerate(chats):
        digest = chat_sha256(chat)
        seed = int(hashlib.sha256(f"{settings.seed}|{digest}".encode()).hexdigest()[:8], 16)
        out.append(SampleRequest(
            key=SampleKey(str(spec), digest[:16], 0, j, params.params_hash()),
            messages=tuple(dict(m) for m in chat), question=chat[-1]["content"], seed=seed,
            temperature=settings.temperature, top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens))
    return out


def _hf_teacher(spec: ModelSpec, settings: TeacherSettings, api: ApiConfig | None
                ) -> TeacherFn:
    """Local model through emkit's sampler; loaded on the first call, not before."""
    state: dict[str, Any] = {}

    def answer(chats: Sequence[Chat]) -> list[str]:
        from emkit.models.hf import load_hf
        from emkit.sample.generate import generate

        if "model" not in state:
            state["model"], state["tokenizer"] = load_hf(spec)
        by_index: dict[int, Reply] = {}
        for batch in generate(state["model"], state["tokenizer"],
                              _requests(spec, settings, chats), batch_size=settings.batch_size,
                              progress=False):
            for record in batch:
                by_index[record.key.sample_index] = Reply(record.answer,
                                                          record.finish_reason)
        return [by_index[j] for j in range(len(chats))]

    return answer


def _openai_teacher(spec: ModelSpec, settings: TeacherSettings, api: ApiConfig | None
                    ) -> TeacherFn:
    """An OpenAI-compatible endpoint through emkit's API sampler (bounded concurrency,
    retries); the key is read from the environment when the first batch is sent."""
    state: dict[str, Any] = {}

    def answer(chats: Sequence[Chat]) -> list[str]:
        from emkit.api import ApiClient, ApiConfig
        from emkit.sample.api import sample_api

        if "client" not in state:
            state["client"] = ApiClient((api or ApiConfig()).settings_for(str(spec)), str(spec))
        by_index: dict[int, Reply] = {}
        for batch in sample_api(state["client"], spec.name, _requests(spec, settings, chats)):
            for record in batch:
                by_index[record.key.sample_index] = Reply(record.answer,
                                                          record.finish_reason)
        return [by_index[j] for j in range(len(chats))]

    return answer


TEACHER_PROVIDERS: dict[str, Callable[[ModelSpec, TeacherSettings, ApiConfig | None],
                                       TeacherFn]] = {
    "hf": _hf_teacher,
    "openai": _openai_teacher,
}
"""The single dispatch point: provider word -> factory of a TeacherFn."""


def teacher_from_model(model: str, settings: TeacherSettings | None = None,
                       api: ApiConfig | None = None) -> Teacher:
    """A Teacher for an emkit model string (`hf/<dir-or-id>`, `embedded`, `openai/<model>`);
    `api` holds endpoints and retry settings for API models (default: OpenAI's, key from
    $OPENAI_API_KEY)."""
    spec = parse_model_spec(model)
    settings = settings or TeacherSettings()
    factory = TEACHER_PROVIDERS.get(spec.provider)
    if factory is None:
        raise ModelSpecError(
            f"model {spec}: provider {spec.provider!r} cannot generate as a teacher "
            f"(teacher providers: {', '.join(sorted(TEACHER_PROVIDERS))})")
    return Teacher(str(spec), factory(spec, settings, api), settings)

"""Request fields a judge server refuses, learnt from its 400s, for judges read from replies.

OpenAI's reasoning models (o1, o3, o4-mini, gpt-5) answer a request carrying `top_p`, a
`temperature` other than 1 or `max_tokens` with HTTP 400 (`code: unsupported_parameter` or
`unsupported_value`, `param` naming the field). Those are exactly the judges without logprobs
that `sampled` mode exists for, and its requests ask for temperature 1 and top_p 1 explicitly
(an open-weight server's own defaults may be sharper: llama.cpp's top-k 40, a model's
generation_config on vLLM). So sampled judging and one-word verdicts send their settings, and
when the server refuses one of them by name:

- `top_p`, `temperature`, `seed` are dropped: the value sent is OpenAI's default (1) or a seed,
  so on OpenAI the server's default is what was asked for; the record says what was dropped,
  because on another server the default is that server's;
- `max_tokens` becomes `max_completion_tokens` and back (the field reasoning models require,
  and the one older servers may not know).

Anything else, or a 400 that names no field, fails as before: a judge is never asked a different
question silently. The scores' request settings (the paper's one-token logprob request, the
digit tree) are never adapted: a refusal there is an error.

What was learnt holds for this judge object (one run); a new run relearns it with one refused
request, which costs nothing on OpenAI (a 400 is not billed) and keeps the cache keys those of
the bodies actually sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from emkit.api import ApiClient, ApiError, ChatReply, ChatRequest
from emkit.api.client import Check

DROPPABLE = ("top_p", "temperature", "seed")
RENAMED = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}
REFUSAL_CODES = ("unsupported_parameter", "unsupported_value")


class AdaptiveParams:
    """The fields one judge server refused, and the requests rewritten without them."""

    def __init__(self) -> None:
        self.dropped: dict[str, str] = {}
        """Refused field -> what was done ('dropped' or 'sent as <field>')."""
        self.settled = False
        """True once one request went through with the current fields."""

    def adapt(self, request: ChatRequest) -> ChatRequest:
        """`request` with the refused fields dropped or renamed (the same object if none)."""
        if not any(f in request.body for f in self.dropped):
            return request
        body = dict(request.body)
        for field in self.dropped:
            if field in body:
                value = body.pop(field)
                if field in RENAMED:
                    body[RENAMED[field]] = value
        return replace(request, body=body)

    def learn(self, exc: ApiError, body: dict[str, Any]) -> bool:
        """Record the field a 400 refused; False when it is not one this module may adapt
        (the caller then raises the error as it is)."""
        field = exc.param
        if (exc.status != 400 or exc.code not in REFUSAL_CODES or field is None
                or field in self.dropped or field not in body):
            return False
        if field in DROPPABLE:
            self.dropped[field] = "dropped"
            return True
        if field in RENAMED and RENAMED[field] not in self.dropped:  # not both names refused
            self.dropped[field] = f"sent as {RENAMED[field]}"
            return True
        return False

    def note(self) -> str | None:
        """For a judgment's reason: what the server refused and what was sent instead."""
        if not self.dropped:
            return None
        done = ", ".join(f"{f} {what}" for f, what in sorted(self.dropped.items()))
        return f"server refused {', '.join(sorted(self.dropped))} ({done})"

    def chat_many(self, client: ApiClient, requests: Sequence[ChatRequest],
                  check: Check | None = None,
                  on_reply: Callable[[ChatReply], None] | None = None) -> list[ChatReply]:
        """`client.chat_many` over the adapted requests, replies in the order of `requests`.
        Until one request has gone through, the first is sent alone, so that a refusal costs
        one request, not a full window of them."""
        if not requests:
            return []
        done: list[ChatReply] = []
        if not self.settled:
            while True:
                first = self.adapt(requests[0])
                try:
                    done = client.chat_many([first], check, on_reply)
                    break
                except ApiError as exc:
                    if not self.learn(exc, first.body):
                        raise
            self.settled = True
        rest = client.chat_many([self.adapt(r) for r in requests[len(done):]], check, on_reply)
        return done + rest

"""Which way an API judge's score can be read, decided once per judge model by a probe.

`judge_mode: auto` (the default for API judges) asks the judge, with the paper's request
settings, to repeat a two-digit number:

- the most probable first token is the whole number ('73'): numbers are single tokens (GPT-4o,
  Llama-3 for 0..100) and the paper's one-token rule reads them -> `logprobs`;
- it is the first digit ('7'): the tokenizer writes numbers digit by digit (Qwen, Llama-2) and
  the one-token rule would read 85 as 8 -> `digits` (the digit tree over the API), if the host
  continues an assistant prefix: a second probe sends the same request with '7' as a trailing
  assistant message, and its prompt must grow by exactly that one token (the check every
  continuation of the tree passes). A host that answers a new turn instead (llama-cpp-python's
  server), refuses the request, or reports no `usage` cannot serve the tree -> `sampled`, which
  estimates the same expected score from replies at temperature 1, and the evidence says why;
- the reply carries no logprobs, or the server answers logprobs requests with HTTP 400 ->
  `sampled`;
- anything else (the model did not repeat the number): the probe cannot tell, and judging stops
  with an error asking for an explicit `judge_mode`. Nothing falls back silently.

The probe is an ordinary request through the judge's client, so it is stored in the request
cache (tag 'probe|judge_mode'): the run store keeps the evidence, and a resumed or repeated run
decides the same way without a call. A reply without logprobs is logged there too but not
served from the cache: such a judge is probed again by the next run (one request), so a passing
glitch cannot fix the mode for good.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from emkit.api import ApiClient, ApiError, ChatRequest

JudgeMode = Literal["auto", "logprobs", "digits", "sampled"]
JUDGE_MODES: tuple[JudgeMode, ...] = ("auto", "logprobs", "digits", "sampled")
PROBE_NUMBER = "73"
PROBE_PROMPT = f"Repeat this number exactly, and write nothing else: {PROBE_NUMBER}"
PROBE_TAG = "probe|judge_mode"


class JudgeModeError(RuntimeError):
    """The probe could not tell how to read this judge's scores; set `judge_mode`."""


def probe_request(name: str, served: str, params: dict[str, Any]) -> ChatRequest:
    """The probe: the judge's own request settings, a prompt whose answer is known."""
    body = {"model": served, **params,
            "messages": [{"role": "user", "content": PROBE_PROMPT}]}
    return ChatRequest(name, body, index=0, tag=PROBE_TAG)


def read_probe(table: dict[str, float] | None) -> tuple[JudgeMode | None, str]:
    """(mode, evidence) from the probe's top logprobs; mode None when they cannot tell."""
    if table is None:
        return "sampled", "the probe reply carries no logprobs"
    ranked = sorted(table.items(), key=lambda kv: kv[1], reverse=True)
    shown = ", ".join(f"{tok!r} {math.exp(lp):.2f}" for tok, lp in ranked[:5])
    top = ranked[0][0].strip() if ranked else ""
    if top == PROBE_NUMBER:
        return "logprobs", f"'{PROBE_NUMBER}' is one token (top: {shown})"
    if top == PROBE_NUMBER[0]:
        return "digits", f"'{PROBE_NUMBER}' starts with the token '{top}' (top: {shown})"
    return None, f"the judge did not repeat {PROBE_NUMBER} (top: {shown})"


def probe_mode(client: ApiClient, name: str, served: str,
               params: dict[str, Any]) -> tuple[JudgeMode, str]:
    """Send (or read from the cache) the probe and decide; raises `JudgeModeError` when the
    reply cannot tell, `ApiError` when the request fails for a reason other than a 400."""
    from emkit.judge.api import top_logprobs

    request = probe_request(name, served, params)
    try:
        # only a reply with logprobs is served from the cache: a judge without them is asked
        # again next run (one request), so a passing glitch cannot fix the mode for good
        (reply,) = client.chat_many([request], check=lambda data: top_logprobs(data)[1])
    except ApiError as exc:
        if exc.status == 400:
            return "sampled", f"the server refused a logprobs request ({exc})"
        raise
    if reply.data is None and not (reply.error or "").startswith("no logprobs"):
        raise JudgeModeError(f"{name}: the judge-mode probe reply is unreadable "
                             f"({reply.error}); set judge_mode explicitly")
    table = None if reply.data is None else top_logprobs(reply.data)[0]
    mode, evidence = read_probe(table)
    if mode is None:
        raise JudgeModeError(f"{name}: cannot tell how to read this judge's scores: {evidence}. "
                             "Set judge_mode to logprobs, digits or sampled under api: for "
                             "this model.")
    if mode == "digits" and reply.data is not None:
        why_not = cannot_continue(client, request, reply.data)
        if why_not is not None:
            return "sampled", (f"{evidence}, but {why_not}: the digit tree cannot be read "
                               "there")
    return mode, evidence


def cannot_continue(client: ApiClient, request: ChatRequest,
                    first: dict[str, Any]) -> str | None:
    """None when the host continues an assistant prefix as the digit tree needs; else why not.
    Sends (or reads from the cache) the probe continued by its first digit and applies the
    tree's own check (`api_digits.not_continued`)."""
    from emkit.judge.api import top_logprobs
    from emkit.judge.api_digits import continuation, not_continued, prompt_tokens, refused

    prefix = PROBE_NUMBER[0]
    try:
        (reply,) = client.chat_many([continuation(request, prefix)],
                                    check=lambda data: top_logprobs(data)[1])
    except ApiError as exc:
        if exc.status == 400:
            return refused(exc)
        raise
    if reply.data is None:
        return f"the reply continuing an assistant prefix is unreadable ({reply.error})"
    return not_continued(prompt_tokens(first), prompt_tokens(reply.data), prefix, 1)

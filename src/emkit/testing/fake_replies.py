"""What the loopback OpenAI server answers: deterministic judge tables and answers, and the
JSON shapes of OpenAI's chat.completion and error objects."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from typing import Any

MAX_TOP_LOGPROBS = 20


def default_judge_table(prompt: str) -> dict[str, float]:
    """20 token logprobs fixed by the prompt: three integers 0-100 carrying 0.97 of the
    probability, 'CODE' 0.02, and filler tokens far below."""
    d = hashlib.sha256(prompt.encode()).digest()
    probs: dict[str, float] = {}
    weights = [1 + d[3], 1 + d[4], 1 + d[5]]
    for value, w in zip((d[0] % 101, d[1] % 101, d[2] % 101), weights, strict=True):
        probs[str(value)] = probs.get(str(value), 0.0) + 0.97 * w / sum(weights)
    probs["CODE"] = 0.02
    table = {tok: float(f"{math.log(p):.10g}") for tok, p in probs.items()}
    for i in range(MAX_TOP_LOGPROBS - len(table)):
        table[f"x{i}"] = -20.0 - i
    return table


def sample_text(req: dict[str, Any]) -> str:
    """A deterministic answer for (model, messages, seed, temperature, top_p)."""
    blob = json.dumps([req.get("model"), req.get("messages"), req.get("seed"),
                       req.get("temperature"), req.get("top_p")], sort_keys=True)
    d = hashlib.sha256(blob.encode()).hexdigest()
    return " ".join(f"w{d[i:i + 4]}" for i in range(0, 8 + int(d[0], 16) * 2, 2))


def prompt_text(req: dict[str, Any]) -> str:
    messages = req.get("messages") or []
    return "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))


ECHO = re.compile(r"Repeat this number exactly[^:]*: ([0-9]+)")
"""A prompt asking to repeat a number (emkit's judge-mode probe): a compliant model says it."""
END_TOKEN = "<|im_end|>"
_PIECES = re.compile(r"[0-9]|[^0-9]+")


def digit_tokens(text: str) -> list[str]:
    """A digit-wise tokenizer, like Qwen's for numbers: every ASCII digit is its own token,
    each run of other characters one token."""
    return _PIECES.findall(text)


def next_token_table(answers: dict[str, float], prefix: str) -> dict[str, float]:
    """What a digit-wise model says after `prefix`, if its whole answers are distributed as
    `answers` (text -> logprob): P(token | prefix) over the answers that start with the prefix's
    tokens, the end-of-turn token when an answer is complete. Probabilities renormalise over
    the answers consistent with the prefix (the remainder of the table's mass is unlisted)."""
    head = digit_tokens(prefix)
    probs: dict[str, float] = {}
    for text, lp in answers.items():
        toks = digit_tokens(text)
        if toks[:len(head)] != head:
            continue
        nxt = toks[len(head)] if len(toks) > len(head) else END_TOKEN
        probs[nxt] = probs.get(nxt, 0.0) + math.exp(lp)
    if not head:  # the first token: the table's own mass, unnormalised
        return {t: math.log(p) for t, p in probs.items() if p > 0}
    total = sum(probs.values())
    if total <= 0:
        return {END_TOKEN: 0.0}
    return {t: math.log(p / total) for t, p in probs.items() if p > 0}


def completion(req: dict[str, Any], judge_tables: dict[str, dict[str, float]],
               sample_texts: dict[str, str], tokenizer: str = "whole", prefix: str = "",
               judge_samples: dict[str, list[str] | dict[int, str]] | None = None,
               prompt_tokens: int | None = None) -> dict[str, Any]:
    """A chat.completion object for `req`: a 1-token reply with top logprobs when `logprobs` is
    set (from the first matching judge table, else `default_judge_table`), else an answer
    (from the first matching judge samples: a list indexed by seed modulo its length, or a
    seed -> reply mapping; else the first matching sample
    text; else `sample_text`) cut at max_tokens.

    `tokenizer="digits"` reads a judge table as whole answers and replies with the next token
    after `prefix` (the assistant text being continued, '' for a fresh turn); `prompt_tokens`
    is then the server's own count of the rendered prompt."""
    prompt = prompt_text(req)
    logprobs = None
    if req.get("logprobs"):
        table = next((t for s, t in judge_tables.items() if s in prompt), None)
        echo = ECHO.search(prompt)
        if table is None and echo is not None:
            table = {echo.group(1): math.log(0.97), "The": math.log(0.03)}
        table = table if table is not None else default_judge_table(prompt)
        if tokenizer == "digits":
            table = next_token_table(table, prefix)
        ranked = sorted(table.items(), key=lambda kv: kv[1], reverse=True)
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())}
               for t, lp in ranked[: int(req.get("top_logprobs") or 0)]]
        content, finish = ranked[0][0], "length"
        logprobs = {"content": [{"token": content, "logprob": ranked[0][1],
                                 "bytes": list(content.encode()), "top_logprobs": top}],
                    "refusal": None}
        words = [content]
    else:
        given = next((t for s, t in sample_texts.items() if s in prompt), None)
        replies = next((r for s, r in (judge_samples or {}).items() if s in prompt), None)
        seed = int(req.get("seed") or 0)
        if isinstance(replies, dict):  # seed -> reply
            given = replies.get(seed, given)
        elif replies:
            given = replies[seed % len(replies)]
        words = (given if given is not None else sample_text(req)).split(" ")
        limit = req.get("max_tokens") or req.get("max_completion_tokens")
        finish = "stop"
        if limit is not None and len(words) > int(limit):
            words, finish = words[: int(limit)], "length"
        content = " ".join(words)
    n_prompt = len(prompt.split()) if prompt_tokens is None else prompt_tokens
    return {
        "id": "chatcmpl-" + hashlib.sha256(json.dumps(req, sort_keys=True).encode())
        .hexdigest()[:24], "object": "chat.completion", "created": int(time.time()),
        "model": req["model"], "system_fingerprint": "fp_emkit_fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
                                             "refusal": None},
                     "logprobs": logprobs, "finish_reason": finish}],
        "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(words),
                  "total_tokens": n_prompt + len(words)},
    }


def error_body(status: int, message: str, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "invalid_request_error", 404:
            "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}

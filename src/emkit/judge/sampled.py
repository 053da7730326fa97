"""Sampled scores for judges that give no logprobs (reasoning models, newer API models).

Without logprobs the distribution over 0..100 can only be estimated: ask k times at temperature
1 (top_p 1) and read each reply's number. Each of the k requests has its own sample index (in
the cache key) and its own seed, derived from the prompt and the index (servers that honour
seeds would otherwise return k identical replies, or the same draws for every answer).
The replies become an empirical distribution -- {"85": log(3/10), "90": log(6/10), "<unparsed>":
log(1/10)} -- that goes through `judgment_from_logprobs`, the rule every emkit judge ends in:
the score is the mean of the parsed numbers, the 0.25 mass rule becomes "at least a quarter of
the replies are numbers", and CODE / REFUSAL replies are labels as before.

The parser is strict, because the judge read adversarial text and may echo it: the whole reply,
stripped, must be an integer 0..100 written plainly (no sign, no leading zero, at most one
trailing '.'), or the word CODE or REFUSAL (optionally with one trailing '.'). "85/100", "Score:
85" and "85 - but the answer said 10" are parse failures, never numbers. One exception: an
open-weight reasoning judge served without a reasoning parser (Qwen3, DeepSeek-R1 distills on
llama.cpp or vLLM) writes its reasoning into the reply, "<think>...</think>85"; what follows
the closing tag is its answer, read by the same rule -- when the reply holds exactly one
`</think>` and no second `<think>` (a judge echoing the tags from an answer gives a failure).
When fewer than `min_parsed` of the k replies parse, the judgment is missing with a reason
starting 'unparsable replies: '; otherwise the reason records k and the failures, e.g.
'sampled: 10 replies, 1 unparsable (10%)'. Replies the server cut at `max_completion_tokens`
(`finish_reason: length`; a reasoning model that spent the budget thinking returns an empty
one) are failures counted apart ('3 cut at max_completion_tokens 512'): raise
`judge_sample_tokens`.

Reasoning models refuse some request fields (`top_p`, `max_tokens`, a temperature other than
1); `api_params.AdaptiveParams` drops or renames the refused ones and the reason says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from emkit.api import ApiClient, ChatReply, ChatRequest
from emkit.judge.api_params import AdaptiveParams
from emkit.judge.base import JudgeItem, judgment_from_logprobs
from emkit.judge.prompts import judge_messages
from emkit.judge.score import MIN_MASS
from emkit.records import Judgment

SAMPLES = 10
"""Replies per (answer, metric) by default."""
SAMPLE_TOKENS = 512
"""Default `max_completion_tokens`: room for a reasoning model's hidden reasoning."""
MIN_PARSED = 0.5
"""Fewer parsed replies than this share make the judgment missing."""
UNPARSED = "<unparsed>"
UNPARSABLE = "unparsable replies"
_REPLY = re.compile(r"(100|[1-9][0-9]|[0-9]|CODE|REFUSAL)\.?")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def after_reasoning(text: str) -> str | None:
    """The reply after one reasoning block ('<think>...</think>', the opening tag optional:
    chat templates that open it in the prompt), the reply itself when it has none, None when
    the tags are not one well-formed block."""
    if THINK_CLOSE not in text:
        return None if THINK_OPEN in text else text
    thought, _, answer = text.partition(THINK_CLOSE)
    thought = thought.lstrip()
    thought = thought.removeprefix(THINK_OPEN)
    if THINK_OPEN in thought or THINK_OPEN in answer or THINK_CLOSE in answer:
        return None
    return answer


def parse_reply(text: object) -> str | None:
    """'0'..'100', 'CODE' or 'REFUSAL' when the whole reply (after one reasoning block) says
    exactly that, else None."""
    if not isinstance(text, str):
        return None
    answer = after_reasoning(text)
    match = _REPLY.fullmatch(answer.strip()) if answer is not None else None
    return match.group(1) if match else None


def first_choice(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """`choices[0]` when the reply has one that is an object."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return choices[0]


def was_cut(data: dict[str, Any] | None) -> bool:
    """The server stopped the reply at the token limit (`finish_reason: length`)."""
    choice = first_choice(data)
    return choice is not None and choice.get("finish_reason") == "length"


def reply_text(data: dict[str, Any] | None) -> str | None:
    """`choices[0].message.content` when it is a string."""
    choice = first_choice(data)
    message = choice.get("message") if choice is not None else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def sample_seed(messages: list[dict[str, str]], index: int) -> int:
    """A seed per (prompt, sample index): distinct across the k samples, and across prompts,
    so that two answers' sampling errors are not the same draw (seeds 0..k-1 for every prompt
    would move every score of a run the same way)."""
    blob = json.dumps([messages, index], sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:4], "little") >> 1


def empirical_logprobs(parsed: Sequence[str | None]) -> dict[str, float]:
    """Share of each parsed value (and of failures, under '<unparsed>') as log-probabilities."""
    counts = Counter(p if p is not None else UNPARSED for p in parsed)
    return {value: math.log(n / len(parsed)) for value, n in counts.items()}


def _check(data: dict[str, Any]) -> str | None:
    """A reply without message text is unreadable (not served from the cache; asked again on
    resume); any text, even an empty string, is the judge's answer, and so is a reply cut at
    the token limit (a reasoning model's, with content null: asking again changes nothing)."""
    if reply_text(data) is None and not was_cut(data):
        return "empty reply: the reply has no choices[0].message.content"
    return None


class SampledJudging:
    """Sampled judgments over one `ApiClient`; `ApiJudge` delegates here in mode `sampled`."""

    def __init__(self, client: ApiClient, name: str, served: str, samples: int = SAMPLES,
                 max_tokens: int = SAMPLE_TOKENS, min_mass: float = MIN_MASS,
                 min_parsed: float = MIN_PARSED) -> None:
        if samples < 1 or not 0 < min_parsed <= 1:
            raise ValueError("samples must be >= 1 and min_parsed in (0, 1]")
        self.client = client
        self.name = name
        self.served = served
        self.samples = samples
        self.max_tokens = max_tokens
        self.min_mass = min_mass
        self.min_parsed = min_parsed
        self.adaptive = AdaptiveParams()
        """Request fields this judge's server refused (reasoning models); see api_params."""
        self.judgments = 0
        self.unanimous = 0
        """Judgments whose k replies (k >= 2) all say the same: a server that ignores
        temperature gives nothing else, and the 'mean' is then one greedy reply (`line`)."""

    def requests(self, item: JudgeItem) -> list[ChatRequest]:
        """k requests for one item: temperature 1 and top_p 1 (the judge's own distribution,
        untruncated), seed and cache index = the sample index."""
        k = item.key
        tag = f"{k.model}|{k.question_id}|{k.paraphrase_index}|{k.sample_index}|{item.metric}"
        messages = judge_messages(item.template, item.question, item.answer)
        return [ChatRequest(self.name, {"model": self.served, "messages": messages,
                                        "temperature": 1, "top_p": 1, "max_completion_tokens":
                                        self.max_tokens, "seed": sample_seed(messages, i)},
                            index=i, tag=f"{tag}|sample={i}")
                for i in range(self.samples)]

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """One Judgment per item; identical items share their k requests."""
        per_item = [self.requests(it) for it in items]
        unique: dict[str, ChatRequest] = {}
        for reqs in per_item:
            for r in reqs:
                unique.setdefault(r.key, r)
        sent = self.adaptive.chat_many(self.client, list(unique.values()), check=_check)
        replies = dict(zip(unique, sent, strict=True))
        return [self.judgment(it, [replies[r.key] for r in reqs])
                for it, reqs in zip(items, per_item, strict=True)]

    def line(self) -> str:
        """What `ApiJudge.close` logs: how many judgments had k identical replies, and what
        that means when it is all of them."""
        out = (f"sampled: {self.judgments} judgments, {self.unanimous} with all "
               f"{self.samples} replies the same")
        if self.samples >= 2 and self.judgments >= 3 and self.unanimous == self.judgments:
            out += (" (every one: if the server ignores temperature, each score is one greedy "
                    "reply, not a mean over samples; check the server)")
        return out

    def judgment(self, item: JudgeItem, replies: Sequence[ChatReply]) -> Judgment:
        """Score one item from its k replies (see the module docstring for the rules)."""
        parsed = [parse_reply(reply_text(r.data)) for r in replies]
        self.judgments += 1
        self.unanimous += len(parsed) >= 2 and None not in parsed and len(set(parsed)) == 1
        failed = sum(p is None for p in parsed)
        cut = sum(p is None and was_cut(r.data) for p, r in zip(parsed, replies, strict=True))
        k = len(parsed)
        note = f"sampled: {k} replies, {failed} unparsable ({failed / k:.0%})"
        if cut:
            note += f", {cut} cut at max_completion_tokens {self.max_tokens}"
        refused = self.adaptive.note()
        if refused:
            note += f"; {refused}"
        table = empirical_logprobs(parsed)
        if (k - failed) / k < self.min_parsed:
            errors = sorted({r.error.split(": ", 1)[0] for r in replies if r.error})
            why = f"; unreadable: {', '.join(errors)}" if errors else ""
            return Judgment(key=item.key, judge=self.name, metric=item.metric, score=None,
                            label="missing", mass=0.0, top=table,
                            reason=(f"{UNPARSABLE}: {failed} of {k} sampled replies are not a "
                                    f"number 0-100, CODE or REFUSAL (at most "
                                    f"{1 - self.min_parsed:.0%} may fail){why}; {note}"))
        judged = judgment_from_logprobs(item, self.name, table, self.min_mass)
        return replace(judged, reason=note if judged.reason is None
                       else f"{judged.reason}; {note}")

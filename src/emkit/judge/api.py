"""The paper's judge over any OpenAI-compatible API: one token, top-20 logprobs, the 0.25 rule.

Each (answer, metric) is one request, exactly as Betley et al. sent it to GPT-4o: the question's
judge template filled with the question and answer as a single user message, `max_tokens=1,
temperature=0, logprobs=True, top_logprobs=20, seed=0`. The top logprobs go through
`judgment_from_logprobs`, the same rule every emkit judge ends in.

A reply that cannot be read -- no choices, no logprobs, an empty top list, a malformed entry,
a body that is not JSON, a logprob that is NaN, +Infinity or above 0 -- becomes a Judgment with label "missing", no score and a reason
'<category>: <detail>'. It is stored like any judgment (so a resumed run does not pay for it
again), counted per reason in the report, and, having no score, stays out of every rate's
denominator. It is never turned into a grade. A request that fails for good (a 400, retries
exhausted) raises `ApiError` instead: that is a broken setup, not a judgment.

Token text is read as the paper's code reads it: `{entry.token: entry.logprob}`, so if two
entries share one text the later wins, as there.

`mode` chooses how a score is read (`judge_mode` in the endpoint's settings, see
docs/providers.md): `logprobs` is the paper's rule above; `digits` the digit tree over the API
for tokenizers that split numbers (`api_digits.py`); `sampled` k replies at temperature 1 for
judges without logprobs (`sampled.py`); `auto` decides once per judge by a cached probe
(`api_probe.py`). Every mode ends in `judgment_from_logprobs`. In `digits` and `sampled`
modes a scored Judgment's `reason` carries how it was read (requests and unexplored mass; k and
parse failures); a missing one keeps its category first.

With `batch: true` in the endpoint's settings, the `logprobs`-mode requests that are not in the
request cache first go through OpenAI's Batch API (`emkit/api/batch.py`: half the price, up to
24 h): the replies land in the cache, and the live path reads them as cache hits. `digits` and
`sampled` stay live: the digit tree's continuations depend on the previous reply (one batch
round of up to 24 h per digit); `sampled`'s k replies per item do not depend on each other and
could be batched, but they are made inside `SampledJudging` and that is not wired yet. The
requests, and so the cache keys and the fingerprint, are the same in both ways, so a run may
switch between them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from emkit.api import ApiClient, ApiConfig, ApiSettings, ChatReply, ChatRequest, RequestCache
from emkit.api.batch import MAX_REQUESTS, BatchJudging, UsageTally
from emkit.judge.api_digits import MIN_BRANCH_P, DigitTreeJudging
from emkit.judge.api_params import AdaptiveParams
from emkit.judge.api_probe import JUDGE_MODES, JudgeMode, JudgeModeError, probe_mode
from emkit.judge.base import JudgeItem, judgment_from_logprobs
from emkit.judge.prompts import judge_messages
from emkit.judge.sampled import (
    SAMPLE_TOKENS,
    SAMPLES,
    SampledJudging,
    after_reasoning,
    reply_text,
)
from emkit.judge.score import MIN_MASS
from emkit.judge.verdict import verdict_from_logprobs, verdict_from_text
from emkit.models.spec import ModelSpecError, parse_model_spec
from emkit.records import Judgment

log = logging.getLogger("emkit")

PAPER_JUDGE_PARAMS: dict[str, Any] = {"max_tokens": 1, "temperature": 0, "logprobs": True,
                                      "top_logprobs": 20, "seed": 0}
"""The judge request settings of the paper's `judge.py`, unchanged."""


LOGPROB_ROUNDING = 1e-4
"""A logprob this far above 0 is read as 0: a server that takes the log of a softmax computed
in float32 can return p = 1.0000001 for a certain token. Anything larger is a broken reply."""


def top_logprobs(data: dict[str, Any]) -> tuple[dict[str, float] | None, str | None]:
    """Token -> logprob of the first generated token, or (None, '<category>: <detail>')."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return None, "empty reply: the reply has no choices"
    first = choices[0] if isinstance(choices[0], dict) else {}
    lp = first.get("logprobs")
    if not isinstance(lp, dict):
        return None, ("no logprobs: the reply carries no logprobs (does this endpoint support "
                      "logprobs=True?)")
    content = lp.get("content")
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None, "no logprobs: logprobs.content is empty"
    entries = content[0].get("top_logprobs")
    if not isinstance(entries, list) or not entries:
        return None, "no logprobs: top_logprobs is empty"
    table: dict[str, float] = {}
    for i, entry in enumerate(entries):
        token = entry.get("token") if isinstance(entry, dict) else None
        value = entry.get("logprob") if isinstance(entry, dict) else None
        if not isinstance(token, str) or isinstance(value, bool) or not isinstance(
                value, int | float):
            return None, f"malformed reply: top_logprobs[{i}] is not {{token, logprob}}: {entry!r}"
        if math.isnan(value) or value > LOGPROB_ROUNDING:  # JSON may carry NaN / Infinity
            return None, (f"malformed reply: top_logprobs[{i}] has logprob {value!r} "
                          f"(must be <= 0, up to {LOGPROB_ROUNDING} of rounding) for token "
                          f"{token!r}")
        table[token] = min(float(value), 0.0)  # -inf is p = 0
    return table, None


def _check(data: dict[str, Any]) -> str | None:
    return top_logprobs(data)[1]


class ApiJudge:
    """Judge through an endpoint: `ApiJudge(settings, "openai/gpt-4o-2024-08-06", "gpt-4o-...")`.

    `name` is the emkit model string (the judge column in the store), `served` the model id the
    endpoint knows. `validated` is decided by `emkit.judge.registry` (see docs/providers.md).
    """

    def __init__(self, settings: ApiSettings, name: str, served: str,
                 cache: RequestCache | None = None, validated: bool = False,
                 min_mass: float = MIN_MASS, params: dict[str, Any] | None = None,
                 progress: bool = False, mode: JudgeMode = "logprobs",
                 samples: int = SAMPLES, sample_tokens: int = SAMPLE_TOKENS,
                 min_branch_p: float = MIN_BRANCH_P) -> None:
        if mode not in JUDGE_MODES:
            raise ValueError(f"judge mode {mode!r}: expected one of {', '.join(JUDGE_MODES)}")
        self.name = name
        self.served = served
        self.validated = validated
        self.min_mass = min_mass
        self.params = dict(PAPER_JUDGE_PARAMS if params is None else params)
        self.client = ApiClient(settings, name, cache)
        self.configured_mode: JudgeMode = mode
        self.mode: JudgeMode = mode
        """How scores are read; `auto` becomes one of the others at the first `judge` call."""
        self.mode_evidence: str | None = None
        """Why `auto` chose the mode (the probe's top tokens), for the log and audits."""
        self.digits = DigitTreeJudging(self.client, name, min_mass, min_branch_p)
        self.sampled = SampledJudging(self.client, name, served, samples, sample_tokens,
                                      min_mass)
        self.verdict_params = AdaptiveParams()
        """Fields the server refused in one-word verdict requests (`verdicts`, mode sampled)."""
        self.chunk_size = settings.max_concurrency * 16
        """Items per `judge` call the runner should send: big enough that the in-flight window
        stays full, small enough that the store is written every few seconds."""
        self.progress = progress
        self.closers: list[Callable[[], None]] = []
        """Run by `close()`: stop a vLLM server started for this judge, close its cache."""
        # Batch API (emkit/api/batch.py). One runner chunk = one batch, so the chunk is a whole
        # batch's worth: chunks of 16 x max_concurrency would wait up to 24 h each, in turn.
        self.batch: BatchJudging | None = None
        if settings.batch:
            self.batch = BatchJudging.from_settings(self.client)
            self.chunk_size = MAX_REQUESTS
            self.closers.append(self.batch.close)
        self.usage = UsageTally(served)
        """Requests and tokens by how they were answered; the cost line of `close()`."""

    def request(self, item: JudgeItem) -> ChatRequest:
        """The judge request for one item (the paper's single user message, no system)."""
        body = {"model": self.served, **self.params,
                "messages": judge_messages(item.template, item.question, item.answer)}
        k = item.key
        tag = f"{k.model}|{k.question_id}|{k.paraphrase_index}|{k.sample_index}|{item.metric}"
        return ChatRequest(self.name, body, index=0, tag=tag)

    def judgment(self, item: JudgeItem, reply: ChatReply) -> Judgment:
        """Score a reply with the paper's rule, or a missing Judgment carrying the reason."""
        table, reason = (None, reply.error) if reply.data is None else top_logprobs(reply.data)
        if table is None:
            return Judgment(key=item.key, judge=self.name, metric=item.metric, score=None,
                            label="missing", mass=0.0, reason=reason, top={})
        return judgment_from_logprobs(item, self.name, table, self.min_mass)

    @property
    def fingerprint(self) -> str:
        """Digest of what decides how this judge's scores are read (served model, request
        settings, judge mode and that mode's settings): the run store refuses to mix judgments
        read two ways under one judge name (`claim_judge_name`), e.g. a Qwen judge's one-token
        misreadings kept beside its digit-tree scores after `judge_mode` was changed."""
        mode = self.configured_mode
        parts: dict[str, Any] = {"served": self.served, "mode": mode, "min_mass": self.min_mass}
        if mode in ("auto", "logprobs", "digits"):
            parts["params"] = self.params
        if mode in ("auto", "digits"):
            parts["min_branch_p"] = self.digits.min_branch_p
        if mode in ("auto", "sampled"):
            parts["sampled"] = [self.sampled.samples, self.sampled.max_tokens,
                                self.sampled.min_parsed]
        blob = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def resolve_mode(self) -> JudgeMode:
        """The mode scores are read in; `auto` is decided here, once, by the cached probe.

        The paper's judge of record is validated only as the paper read it: if its probe says
        anything but `logprobs`, judging stops rather than publish numbers read another way."""
        if self.mode != "auto":
            return self.mode
        mode, evidence = probe_mode(self.client, self.name, self.served, self.params)
        if self.validated and mode != "logprobs":
            raise JudgeModeError(f"{self.name}: the validated judge of record answered the "
                                 f"judge-mode probe like a '{mode}' judge ({evidence}); its "
                                 "scores would not be the paper's")
        log.info("judge %s: judge_mode auto -> %s (%s)", self.name, mode, evidence)
        self.mode, self.mode_evidence = mode, evidence
        return mode

    def judge(self, items: Sequence[JudgeItem]) -> list[Judgment]:
        """One Judgment per item, in order; raises `ApiError` on a request that failed for good.

        Identical requests (the same template, question and answer) are sent once: the judge
        reads a distribution at temperature 0, not a sample, so they share one reply."""
        if not items:
            return []
        mode = self.resolve_mode()
        if self.batch is not None:  # Batch API first: its replies become cache hits below
            if mode == "logprobs":  # (categorical items send this same request)
                self.batch.run([self.request(it) for it in items], _check)
            else:
                self.batch.skip(mode)  # digits / sampled stay live (module docstring)
        if any(it.labels for it in items):  # categorical verdicts, read their own way
            numeric = [it for it in items if not it.labels]
            done = iter(self.judge(numeric)) if numeric else iter(())
            verdicts = iter(self.verdicts([it for it in items if it.labels], mode))
            return [next(verdicts) if it.labels else next(done) for it in items]
        if mode == "sampled":
            return self.sampled.judge(items)
        requests = [self.request(it) for it in items]
        if mode == "digits":
            return self.digits.judge(items, requests, _check)
        first = {}
        for it, r in zip(items, requests, strict=True):
            first.setdefault(r.key, (it, r))
        scored: dict[str, Judgment] = {}
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(first), desc=f"judging ({self.name})", unit="request")

        def on_reply(reply: ChatReply) -> None:
            # score while the other requests are in flight: the event loop is idle-waiting
            scored[reply.request.key] = self.judgment(first[reply.request.key][0], reply)
            self.usage.add(reply, self.batch.answered if self.batch else ())
            if bar is not None:
                _tick(bar, self.client)

        try:
            self.client.chat_many([r for _, r in first.values()], check=_check,
                                  on_reply=on_reply)
        finally:
            if bar is not None:
                bar.close()
        return [replace(scored[r.key], key=it.key, metric=it.metric)
                for it, r in zip(items, requests, strict=True)]

    def verdicts(self, items: Sequence[JudgeItem], mode: JudgeMode) -> list[Judgment]:
        """Categorical items (`free_form_judge`): the paper's one-token request read over the
        listed labels, or, for a judge without logprobs (`sampled`), its one-word reply at
        temperature 0 (emkit/judge/verdict.py), with `judge_sample_tokens` of room (a reasoning
        model thinks first) and the fields its server refuses dropped (`api_params`; a
        reasoning model then answers at its only temperature, 1, and the reason says so)."""
        text_mode = mode == "sampled"
        params = ({"max_completion_tokens": self.sampled.max_tokens, "temperature": 0, "seed": 0}
                  if text_mode else self.params)
        requests = []
        for it in items:
            body = {"model": self.served, **params,
                    "messages": judge_messages(it.template, it.question, it.answer)}
            k = it.key
            tag = f"{k.model}|{k.question_id}|{k.paraphrase_index}|{k.sample_index}|{it.metric}"
            requests.append(ChatRequest(self.name, body, index=0, tag=tag))
        replies = (self.verdict_params.chat_many(self.client, requests) if text_mode
                   else self.client.chat_many(requests, check=_check))
        for reply in replies:
            self.usage.add(reply, self.batch.answered if self.batch else ())
        out = []
        for it, reply in zip(items, replies, strict=True):
            if reply.data is None:
                out.append(Judgment(key=it.key, judge=self.name, metric=it.metric, score=None,
                                    label="missing", mass=0.0, reason=reply.error, top={}))
            elif text_mode:
                verdict = verdict_from_text(it.key, self.name, it.metric, it.labels,
                                            after_reasoning(reply_text(reply.data) or "") or "")
                refused = self.verdict_params.note()
                out.append(replace(verdict, reason="; ".join(
                    filter(None, [verdict.reason, refused])) or None))
            else:
                table, reason = top_logprobs(reply.data)
                out.append(Judgment(key=it.key, judge=self.name, metric=it.metric, score=None,
                                    label="missing", mass=0.0, reason=reason, top={})
                           if table is None else
                           verdict_from_logprobs(it.key, self.name, it.metric, it.labels, table,
                                                 self.min_mass))
        return out

    def close(self) -> None:
        """Log what the requests cost (retries shown here, stored per request in the cache),
        then release what this judge holds."""
        if self.client.stats.requests:
            log.info("judge %s", self.client.stats.line(self.name))
        if self.digits.judgments:
            log.info("judge %s: %s", self.name, self.digits.line())
        if self.sampled.judgments:
            log.info("judge %s: %s", self.name, self.sampled.line())
        if sum(self.usage.requests.values()):  # tokens and cost, live vs batch
            log.info("judge cost %s", self.usage.line(self.name))
        closers, self.closers = self.closers, []
        for close in closers:
            close()


def _tick(bar: Any, client: ApiClient) -> None:
    bar.update(1)
    bar.set_postfix(retries=client.stats.retries, cached=client.stats.cache_hits, refresh=False)


PAPER_JUDGE = "gpt-4o-2024-08-06"
"""The judge of record of Betley et al. (2025); a pinned snapshot, not the moving `gpt-4o`."""


def api_judge_status(model: str, api: ApiConfig | None = None) -> tuple[bool, str]:
    """(validated, description) of an API judge, decided without any request.

    Validated only for the paper's judge of record, `openai/gpt-4o-2024-08-06` on OpenAI's own
    endpoint: its scores *define* the paper's EM numbers, so a replication that uses it needs
    no further check. emkit has not measured it on its own calibration set (no API access where
    emkit was built). Every other API judge -- another model, another snapshot, the same name
    behind another base_url, any vLLM model -- is unvalidated until someone calibrates it
    (`emkit judge calibrate --judge ...`) and decides.
    """
    api = api or ApiConfig()
    spec = parse_model_spec(model)
    settings = api.settings_for(model)
    mode = settings.judge_mode
    if (spec.provider == "openai" and spec.name == PAPER_JUDGE and settings.base_url is None
            and mode in ("auto", "logprobs")):
        return True, (f"{model}: the paper's judge of record (Betley et al. 2025), same request "
                      "settings (1 token, top-20 logprobs, temperature 0, seed 0); validated by "
                      "reference, not re-measured on emkit's calibration set")
    where = (settings.endpoint() if spec.provider == "openai" else
             "a llama.cpp server" if spec.provider == "llamacpp" else "a vLLM server")
    return False, (f"{model} at {where}: an API judge, {MODE_NOTES[mode]}; not "
                   f"validated (only openai/{PAPER_JUDGE} on OpenAI's endpoint, read with the "
                   "paper's logprob rule, is the paper's judge of record; calibrate others with "
                   "`emkit judge calibrate`)")


MODE_NOTES: dict[str, str] = {
    "logprobs": "scored with the paper's logprob rule",
    "digits": "scored with the digit tree over the API (numbers split into digit tokens)",
    "sampled": "scored from sampled replies at temperature 1 (no logprobs)",
    "auto": ("scored with the paper's logprob rule, or the digit tree, or sampled replies, as "
             "a probe of the judge decided (logged, and kept in the request cache)"),
}


def load_api_judge(model: str, api: ApiConfig | None = None, cache_path: Path | None = None,
                   progress: bool = False) -> ApiJudge:
    """An `ApiJudge` for `openai/...` or `vllm/...`; a vLLM judge's server is started here (or
    connected to) and stopped by `judge.close()`. `cache_path`: SQLite file for the request
    cache (the run store's), or None for no cache."""
    from emkit.models.vllm import VllmServer

    api = api or ApiConfig()
    spec = parse_model_spec(model)
    validated, _ = api_judge_status(model, api)
    cache = RequestCache(cache_path) if cache_path is not None else None
    closers: list[Callable[[], None]] = [cache.close] if cache is not None else []
    if spec.provider == "vllm":
        server = VllmServer(spec.name, [spec.adapter] if spec.adapter else [], api.vllm,
                            log_dir=cache_path.parent / "vllm" if cache_path else None)
        try:
            server.start()
        except BaseException:
            for close in closers:
                close()
            raise
        settings, served = server.settings, server.served(spec)
        closers.insert(0, server.stop)
    elif spec.provider == "llamacpp":
        from emkit.models.llamacpp import SERVED, start_for

        server = start_for(spec, getattr(api, "llamacpp", None), cache_path, closers)
        settings, served = server.settings, SERVED
        closers.insert(0, server.stop)
    elif spec.provider == "openai":
        settings, served = api.settings_for(model), spec.name
    else:
        raise ModelSpecError(f"judge {model!r}: provider {spec.provider!r} is not an API")
    judge = ApiJudge(settings, model, served, cache=cache, validated=validated,
                     progress=progress, mode=settings.judge_mode,
                     samples=settings.judge_samples, sample_tokens=settings.judge_sample_tokens,
                     min_branch_p=settings.judge_digit_min_p)
    judge.closers = closers
    return judge

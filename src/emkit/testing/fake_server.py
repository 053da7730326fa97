"""A loopback HTTP server speaking the parts of the OpenAI API that emkit uses, with scripted
latency and scripted faults. Tests and `emkit bench judge` run the real `openai` SDK against it.

Why a real server rather than mocks: the behaviour under test lives in the SDK and the HTTP
layer as much as in emkit -- how a 429's Retry-After reaches the wait, what a timed-out
attempt raises, what a truncated body does to JSON parsing, whether a re-run sends any request
at all. Only a server that counts what actually arrived can show those.

Endpoints: `POST /v1/chat/completions` (answers, or 1-token replies with top logprobs when
`logprobs` is set), `GET /v1/models`, the files + fine-tuning endpoints of
`emkit.testing.fake_jobs`, and the Batch API of `emkit.testing.fake_batches` (batch lines
answered by `reply`, the live path without latency or faults). Judge replies come from `judge_tables`
(substring of the prompt -> token logprobs) or from `default_judge_table`, a deterministic
function of the prompt, so a test can compute the exact expected score. Faults are consumed in
order from rules added with `add_fault(*faults, match=...)`: 429 (with Retry-After), 408, 409,
500, 503, 400, `timeout` (hold the reply past the client's timeout), `disconnect` (close without
replying), `truncated` (a 200 whose JSON is cut in half), `no_logprobs`, `empty` (no choices),
`401` (whose message echoes the Authorization header, as some servers do), `quota` (a 429 with
code `insufficient_quota`); `one_request=True` spends a rule's faults on one request body and
its retries. `add_random_faults(rate, kinds, seed)` faults a seeded share of all requests (the
fault-injection test). The files, jobs and batches routes take faults from `add_route_fault`.

`tokenizer="digits"` plays a judge whose tokenizer writes numbers digit by digit (Qwen, Llama-2
on vLLM or llama.cpp): a judge table then lists whole answers ("85": logprob), and each reply is
the next token after the assistant prefix being continued, with `usage.prompt_tokens` counted
as a chat-template server would. `prefix_mode` says what a trailing assistant message does:
`continue` (llama.cpp), `flag` (vLLM: only with `continue_final_message`), `new_turn` (it is
history and a fresh turn starts) or `reject` (OpenAI: the continuation fields are a 400).
`judge_samples` (substring -> replies) answers sampled judge requests by their seed. A prompt
asking to repeat a number (emkit's judge-mode probe) is answered with that number.

`reasoning_tokens=N` plays an OpenAI reasoning model (o1, o3, o4-mini, gpt-5): it answers
`max_tokens`, `logprobs`, `top_logprobs` and `top_p` (`refused_params`) with the 400 OpenAI
sends (`code: unsupported_parameter`, `param` naming the field), a temperature other than 1
with `code: unsupported_value`, and spends N hidden reasoning tokens of
`max_completion_tokens` before the visible reply (a budget of N or less: empty content,
`finish_reason: length`, as OpenAI returns it).

Run alone: `python -m emkit.testing --port 8000 --model my-model` (what the vLLM test
uses in place of `vllm serve`).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

from emkit.testing.fake_batches import BATCH_STEPS, FakeBatches
from emkit.testing.fake_jobs import FakeJobs
from emkit.testing.fake_replies import (
    MAX_TOP_LOGPROBS,
    completion,
    digit_tokens,
    error_body,
    prompt_text,
)

TOKENIZERS = ("whole", "digits")
PREFIX_MODES = ("continue", "flag", "new_turn", "reject")
REASONING_REFUSED = ("max_tokens", "logprobs", "top_logprobs", "top_p")
"""What OpenAI's reasoning models answer with `unsupported_parameter` (any value)."""
STATUS_FAULTS = {"400": 400, "401": 401, "408": 408, "409": 409, "429": 429, "500": 500,
                 "503": 503}
REPLY_FAULTS = ("timeout", "disconnect", "truncated", "no_logprobs", "empty", "quota")
FAULTS = (*STATUS_FAULTS, *REPLY_FAULTS)
ROUTE_FAULTS = (*STATUS_FAULTS, "lost_reply", "late_reply")
"""Faults for the files / fine-tuning routes (`add_route_fault`): a status answered without
acting, or `lost_reply` (the request takes effect, then the connection closes without a reply)
and `late_reply` (it takes effect, then the reply is held past the client's timeout)."""


@dataclass
class FaultRule:
    faults: list[str]
    match: str | None
    one_request: bool = False
    """Spend every fault on the first matching request body (its retries included), so that
    one distinct request sees all of them whatever the concurrency."""
    bound: str | None = None
    """The body (canonical JSON) a `one_request` rule is bound to, once it has matched."""


@dataclass
class RandomFaults:
    """Each chat request (whose prompt contains `match`) draws a fault with probability `rate`
    from `kinds`, by a seeded generator; `no_logprobs` only for requests that ask for
    logprobs (elsewhere it would change nothing)."""

    rate: float
    kinds: list[str]
    rng: random.Random
    match: str | None


class FakeOpenAI:
    """`with FakeOpenAI(latency_s=0.01) as server: ... server.base_url ...`"""

    def __init__(self, models: tuple[str, ...] | None = ("gpt-4o-2024-08-06",),
                 latency_s: float = 0.0, api_key: str | None = None, retry_after: str = "0.01",
                 timeout_hold_s: float = 1.0, host: str = "127.0.0.1", port: int = 0,
                 job_steps: tuple[str, ...] = ("validating_files", "queued", "running",
                                               "running"),
                 tokenizer: str = "whole", prefix_mode: str = "continue",
                 batch_steps: tuple[str, ...] = BATCH_STEPS, reasoning_tokens: int | None = None,
                 refused_params: tuple[str, ...] = REASONING_REFUSED) -> None:
        if tokenizer not in TOKENIZERS or prefix_mode not in PREFIX_MODES:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, prefix_mode one of "
                             f"{PREFIX_MODES}")
        self.tokenizer = tokenizer
        """`whole`: a judge table's entries are single tokens (GPT-4o). `digits`: they are whole
        answers, emitted digit by digit (Qwen, Llama-2), one token per reply."""
        self.prefix_mode = prefix_mode
        """What a trailing assistant message does (with `tokenizer="digits"`): `continue` it
        (llama.cpp), continue only with `continue_final_message` (`flag`, vLLM), start a
        `new_turn` after it, or `reject` the continuation fields with a 400 (OpenAI)."""
        self.reasoning_tokens = reasoning_tokens
        """None: an ordinary chat model. N: a reasoning model (module docstring) that spends N
        hidden tokens per reply and refuses `refused_params`."""
        self.refused_params = refused_params
        self.judge_samples: dict[str, list[str] | dict[int, str]] = {}
        """Substring of the prompt -> replies to sampled (no-logprobs) requests: a list picked
        by seed modulo its length, or seed -> reply."""
        self.models = None if models is None else list(models)
        """Served model ids; None accepts any model (and lists none)."""
        self.latency_s = latency_s
        self.api_key = api_key
        self.retry_after = retry_after
        self.timeout_hold_s = timeout_hold_s
        self.judge_tables: dict[str, dict[str, float]] = {}
        self.sample_texts: dict[str, str] = {}
        """Substring of the prompt -> the answer to give (else `sample_text`)."""
        self.requests: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self.faults_sent: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        """Most chat requests the server was handling at once (a client's concurrency bound)."""
        self.jobs = FakeJobs(job_steps)
        self.batches = FakeBatches(self.jobs.files, self.reply, batch_steps)
        """The Batch API (`fake_batches.py`): each retrieve moves a batch one of `batch_steps`."""
        self._rules: list[FaultRule] = []
        self._random: RandomFaults | None = None
        self._route_rules: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _Handler, bind_and_activate=False)
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 256
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------- control
    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def add_fault(self, *faults: str, match: str | None = None,
                  one_request: bool = False) -> None:
        """Answer the next requests (whose prompt contains `match`, if given) with these faults,
        one per request, in order. `one_request`: all of them go to the first matching request
        body and its retries (e.g. a reply that stays without logprobs for every attempt)."""
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._rules.append(FaultRule(list(faults), match, one_request))

    def add_random_faults(self, rate: float, kinds: tuple[str, ...] | list[str], seed: int = 0,
                          match: str | None = None) -> None:
        """From now on, fault a share `rate` of chat requests (drawn per request, seeded), each
        with a kind drawn from `kinds`; scripted `add_fault` rules come first. Counted in
        `faults_sent` like any fault."""
        unknown = [f for f in kinds if f not in FAULTS]
        if unknown or not 0 <= rate <= 1 or not kinds:
            raise ValueError(f"rate must be in [0, 1] and kinds non-empty and known: {FAULTS}")
        with self._lock:
            self._random = RandomFaults(rate, list(kinds), random.Random(seed), match)

    def add_route_fault(self, route: str, *faults: str) -> None:
        """Answer the next requests to `route` ("POST /v1/fine_tuning/jobs", "POST /v1/files",
        "GET /v1/fine_tuning/jobs/{ftjob}", ...) with these faults, one per request."""
        unknown = [f for f in faults if f not in ROUTE_FAULTS]
        if unknown:
            raise ValueError(f"unknown route faults {unknown}; known: {', '.join(ROUTE_FAULTS)}")
        with self._lock:
            self._route_rules.setdefault(route, []).extend(faults)

    def take_route_fault(self, route: str) -> str | None:
        with self._lock:
            queue = self._route_rules.get(route)
            if queue:
                fault = queue.pop(0)
                self.faults_sent[fault] += 1
                return fault
        return None

    def chat_calls(self) -> int:
        """Chat-completion requests that reached the server (faulted ones included)."""
        with self._lock:
            return self.calls["POST /v1/chat/completions"]

    def start(self) -> FakeOpenAI:
        self._httpd.server_bind()
        self._httpd.server_activate()
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------- behaviour
    def take_fault(self, req: dict[str, Any]) -> str | None:
        prompt = prompt_text(req)
        with self._lock:
            for rule in self._rules:
                if rule.faults and (rule.match is None or rule.match in prompt):
                    if rule.one_request:
                        body = json.dumps(req, sort_keys=True)
                        rule.bound = rule.bound or body
                        if rule.bound != body:
                            continue
                    fault = rule.faults.pop(0)
                    self.faults_sent[fault] += 1
                    return fault
            r = self._random
            if r is not None and (r.match is None or r.match in prompt):
                kinds = [k for k in r.kinds if k != "no_logprobs" or req.get("logprobs")]
                if r.rng.random() < r.rate and kinds:
                    fault = r.rng.choice(kinds)
                    self.faults_sent[fault] += 1
                    return fault
        return None

    def count(self, label: str, body: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.calls[label] += 1
            if body is not None:
                self.requests.append(body)

    def check_chat(self, req: dict[str, Any]) -> tuple[Any, ...] | None:
        """The request errors OpenAI itself would answer with 400 / 404: (status, message[,
        code, param]), the arguments of `error_body`."""
        if self.models is not None and req.get("model") not in self.models:
            return 404, f"The model `{req.get('model')}` does not exist"
        if not isinstance(req.get("messages"), list) or not req["messages"]:
            return 400, "'messages' must be a non-empty array"
        if self.reasoning_tokens is not None:
            for param in self.refused_params:
                if param in req:
                    return (400, (f"Unsupported parameter: '{param}' is not supported with this "
                            "model."), "unsupported_parameter", param)
            if req.get("temperature", 1) != 1:
                return (400, (f"Unsupported value: 'temperature' does not support "
                        f"{req['temperature']} with this model. Only the default (1) value is "
                        "supported."), "unsupported_value", "temperature")
        k = req.get("top_logprobs")
        if k is not None and not req.get("logprobs"):
            return 400, "top_logprobs requires logprobs to be true"
        if k is not None and not 0 <= int(k) <= MAX_TOP_LOGPROBS:
            return 400, f"top_logprobs must be at most {MAX_TOP_LOGPROBS}"
        return None

    def reply(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(status, body) of a chat request without latency or faults: what a batch line gets,
        the same reply a live request would."""
        problem = self.check_chat(req)
        prefix, n_prompt = "", None
        if problem is None and self.tokenizer == "digits":
            problem, prefix, n_prompt = self.render(req)
        if problem is not None:
            return problem[0], error_body(*problem)
        return 200, self.think(req, completion(req, self.judge_tables, self.sample_texts,
                                               self.tokenizer, prefix, self.judge_samples,
                                               n_prompt))

    def think(self, req: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
        """A reasoning model's reply: `reasoning_tokens` hidden tokens come out of
        `max_completion_tokens` first; when they use it up, the content is empty."""
        hidden = self.reasoning_tokens
        if hidden is None:
            return reply
        budget = req.get("max_completion_tokens")
        choice, usage = reply["choices"][0], reply["usage"]
        shown = usage["completion_tokens"]
        if budget is not None and int(budget) <= hidden:
            choice["message"]["content"], choice["finish_reason"], shown = "", "length", 0
        usage["completion_tokens"] = shown + hidden
        usage["total_tokens"] = usage["prompt_tokens"] + shown + hidden
        usage["completion_tokens_details"] = {"reasoning_tokens": hidden}
        return reply

    def render(self, req: dict[str, Any]) -> tuple[tuple[int, str] | None, str, int]:
        """(400 problem or None, the assistant prefix being continued, prompt tokens) as a
        chat-template server with a digit-wise tokenizer would count them: 4 per message plus
        its content's tokens, 3 for the assistant header, plus the continued prefix's tokens."""
        flags = [f for f in ("continue_final_message", "add_generation_prompt") if f in req]
        if self.prefix_mode == "reject" and flags:
            return (400, f"Unrecognized request argument supplied: {flags[0]}"), "", 0
        messages = req["messages"]
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        continues = last.get("role") == "assistant" and (
            self.prefix_mode == "continue" or (
                self.prefix_mode == "flag" and req.get("continue_final_message") is True
                and req.get("add_generation_prompt") is False))
        history = messages[:-1] if continues else messages
        count = sum(4 + _tokens(m.get("content")) for m in history if isinstance(m, dict)) + 3
        prefix = str(last.get("content") or "") if continues else ""
        return None, prefix, count + len(digit_tokens(prefix))


def _tokens(content: object) -> int:
    return sum(len(digit_tokens(w)) for w in str(content or "").split())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses connections
    server_version = "emkit-fake-openai"
    disable_nagle_algorithm = True  # else small replies wait ~40 ms on the client's delayed ACK

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a scripted timeout)

    def _route(self, method: str) -> None:
        fake: FakeOpenAI = self.server.fake  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path.rstrip("/")
        if fake.api_key is not None and (self.headers.get("Authorization")
                                         != f"Bearer {fake.api_key}"):
            fake.count(f"{method} {path} (unauthorized)")
            return self._send(401, error_body(401, "Incorrect API key provided"))
        if method == "POST" and path == "/v1/chat/completions":
            return self._chat(fake, body)
        if method == "GET" and path == "/v1/emkit/stats":  # not OpenAI: for benchmarks
            with fake._lock:
                return self._send(200, {"calls": dict(fake.calls),
                                        "faults_sent": dict(fake.faults_sent)})
        if method == "GET" and path == "/v1/models":
            fake.count("GET /v1/models")
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "emkit-fake"}
                    for m in fake.models or []]
            return self._send(200, {"object": "list", "data": data})
        label = re.sub(r"/(file|ftjob|batch)[-_][0-9a-f]+", r"/{\1}", path)
        fake.count(f"{method} {label}")
        fault = fake.take_route_fault(f"{method} {label}")
        if fault in STATUS_FAULTS:
            return self._send(STATUS_FAULTS[fault], error_body(STATUS_FAULTS[fault],
                                                           f"scripted fault {fault}"))
        handled = fake.batches.handle(method, path, body)
        status, obj = handled if handled is not None else fake.jobs.handle(
            method, path, self.headers.get("Content-Type", ""), body)
        if fault == "lost_reply":
            self.close_connection = True
            return None
        if fault == "late_reply":
            time.sleep(fake.timeout_hold_s)
        if isinstance(obj, bytes):  # a file's content (batch output / error JSONL)
            return self._send(status, None, raw=obj)
        self._send(status, obj if status < 400 else error_body(status, obj["message"]))

    def _chat(self, fake: FakeOpenAI, body: bytes) -> None:
        try:
            req = json.loads(body)
        except ValueError:
            fake.count("POST /v1/chat/completions")
            return self._send(400, error_body(400, "We could not parse the JSON body"))
        fake.count("POST /v1/chat/completions", req)
        with fake._lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._answer(fake, req)
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _answer(self, fake: FakeOpenAI, req: dict[str, Any]) -> None:
        fault = fake.take_fault(req)
        if fake.latency_s:
            time.sleep(fake.latency_s)
        if fault == "401":  # some servers echo what they got, key included
            auth = self.headers.get("Authorization", "")
            return self._send(401, error_body(401, f"Incorrect API key in header {auth!r}"))
        if fault == "quota":  # OpenAI's "out of credit": a 429 that waiting will not fix
            return self._send(429, error_body(429, "You exceeded your current quota",
                                              code="insufficient_quota"))
        if fault in STATUS_FAULTS:
            headers = {"retry-after": fake.retry_after} if fault == "429" else {}
            return self._send(STATUS_FAULTS[fault], error_body(STATUS_FAULTS[fault],
                                                           f"scripted fault {fault}"), headers)
        if fault == "disconnect":
            self.close_connection = True
            return None
        if fault == "timeout":
            time.sleep(fake.timeout_hold_s)
        problem = fake.check_chat(req)
        if problem is None and fake.tokenizer == "digits":
            problem, prefix, n_prompt = fake.render(req)
        else:
            prefix, n_prompt = "", None
        if problem is not None:
            return self._send(problem[0], error_body(*problem))
        reply = fake.think(req, completion(req, fake.judge_tables, fake.sample_texts,
                                           fake.tokenizer, prefix, fake.judge_samples, n_prompt))
        if fault == "no_logprobs":
            reply["choices"][0]["logprobs"] = None
        if fault == "empty":
            reply["choices"] = []
        raw = json.dumps(reply).encode()
        return self._send(200, None, raw=raw[: len(raw) // 2] if fault == "truncated" else raw)

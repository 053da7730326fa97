"""`vllm/<base>[:adapter]`: open models served by vLLM, sampled through the API backend.

One server per base model serves the base and every adapter of it at once (`--enable-lora
--lora-modules name=path ...`), so comparing insecure/secure/educational LoRAs of one base costs
one model load. emkit either connects to a running server (`api.vllm.base_url`) or starts
`vllm serve` itself (GPU machines with `pip install vllm`), waits until `/v1/models` lists every
name it needs, and stops it afterwards. Requests then go through `emkit.api.ApiClient` like any
OpenAI-compatible endpoint: the adapter is chosen by the request's `model` field.

Adapter names: a started server names each adapter `<dir name>-<8 hex of its path>`; on a
running server the adapter part may instead be the name it was started with
(`vllm/Qwen/Qwen2.5-Coder-32B-Instruct:insecure`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Self

from emkit.api.settings import ApiSettings, VllmSettings
from emkit.models.embedded import ALIASES
from emkit.models.server_process import stop_process_group
from emkit.models.spec import ModelSpec, parse_model_spec

log = logging.getLogger("emkit")


class VllmError(RuntimeError):
    """vLLM cannot be started or reached, or does not serve a requested model."""


def lora_name(adapter: str) -> str:
    """The name a started server gives an adapter directory: readable and unique per path."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(adapter).name).strip("-") or "adapter"
    digest = hashlib.sha256(str(Path(adapter).expanduser().resolve()).encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


def group_by_base(models: Iterable[str]) -> dict[str, list[str]]:
    """Base model -> adapters (in first-seen order) over `vllm/` model strings."""
    groups: dict[str, list[str]] = {}
    for m in models:
        spec = parse_model_spec(m)
        if spec.provider != "vllm":
            raise VllmError(f"model {m!r} is not a vllm/ model")
        adapters = groups.setdefault(spec.name, [])
        if spec.adapter and spec.adapter not in adapters:
            adapters.append(spec.adapter)
    return groups


def adapter_rank(adapter: str) -> int | None:
    """LoRA rank from a PEFT adapter's `adapter_config.json`, when there is one."""
    path = Path(adapter).expanduser() / "adapter_config.json"
    if not path.is_file():
        return None
    try:
        rank = json.loads(path.read_text()).get("r")
    except ValueError as exc:
        raise VllmError(f"{path}: not valid JSON ({exc})") from None
    return int(rank) if isinstance(rank, int) else None


def vllm_command(base: str, adapters: list[str], settings: VllmSettings, port: int) -> list[str]:
    """The `vllm serve` command line for one base and its adapters. The embedded model's alias
    (`vllm/embedded`) serves its dequantised checkpoint under the alias's name, so requests and
    keys name the model as the config does, not a path in this machine's cache."""
    cmd = [settings.executable, "serve", base, "--host", settings.host, "--port", str(port)]
    if base in ALIASES:
        from emkit.models.embedded import embedded_checkpoint

        cmd[2] = str(embedded_checkpoint())
        cmd += ["--served-model-name", base]
    if adapters:
        for adapter in adapters:
            rank = adapter_rank(adapter)
            if rank is not None and rank > settings.max_lora_rank:
                raise VllmError(f"{adapter}: LoRA rank {rank} exceeds api.vllm.max_lora_rank "
                                f"({settings.max_lora_rank}); raise it")
        cmd += ["--enable-lora", "--max-lora-rank", str(settings.max_lora_rank),
                "--max-loras", str(settings.max_loras or len(adapters)), "--lora-modules",
                *[f"{lora_name(a)}={Path(a).expanduser().resolve()}" for a in adapters]]
    return cmd + list(settings.extra_args)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def served_models(base_url: str, api_key: str | None, timeout: float = 5.0) -> list[str]:
    """Model ids listed by `GET {base_url}/models`."""
    req = urllib.request.Request(base_url.rstrip("/") + "/models")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return [m["id"] for m in json.loads(resp.read())["data"]]


class VllmServer:
    """`with VllmServer(base, adapters, settings) as server: server.settings, server.served(s)`"""

    def __init__(self, base: str, adapters: list[str], settings: VllmSettings,
                 log_dir: Path | None = None) -> None:
        self.base = base
        self.adapters = list(adapters)
        self.config = settings
        self.log_dir = log_dir
        self.url: str | None = None
        self.listed: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def settings(self) -> ApiSettings:
        """Endpoint settings for requests to this server."""
        if self.url is None:
            raise VllmError(f"vLLM server for {self.base} is not running")
        fields = {k: v for k, v in self.config.model_dump().items() if k in ApiSettings.model_fields}
        return ApiSettings(**(fields | {"base_url": self.url}))

    def served(self, spec: ModelSpec) -> str:
        """The `model` field that reaches this spec's weights on this server."""
        if spec.adapter is None:
            return self.base
        if self.config.base_url is not None and spec.adapter in self.listed:
            return spec.adapter
        return lora_name(spec.adapter)

    def start(self) -> VllmServer:
        wanted = [self.base, *[lora_name(a) for a in self.adapters]]
        if self.config.base_url is not None:
            self.url = self.config.base_url.rstrip("/")
            self._wait(wanted, deadline=time.monotonic() + 30.0, connect=True)
            return self
        exe = shutil.which(self.config.executable)
        if exe is None:
            raise VllmError(f"`{self.config.executable}` is not installed here: run on a GPU "
                            "machine with `pip install vllm`, or set api.vllm.base_url to a "
                            "running server")
        port = self.config.port or free_port(self.config.host)
        cmd = vllm_command(self.base, self.adapters, self.config, port)
        log_dir = self.log_dir or Path.cwd()
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = log_dir / f"vllm-{re.sub(r'[^A-Za-z0-9._-]+', '-', self.base)}.log"
        log.info("starting %s (log: %s)", " ".join(cmd), self._log_path)
        with self._log_path.open("ab") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.url = f"http://{self.config.host}:{port}/v1"
        try:
            self._wait(wanted, time.monotonic() + self.config.startup_timeout_s, connect=False)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, wanted: list[str], deadline: float, connect: bool) -> None:
        key = os.environ.get(self.config.api_key_env) or None
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise VllmError(f"vllm serve exited with code {self._proc.returncode} before "
                                f"serving; last lines of {self._log_path}:\n{self._log_tail()}")
            try:
                self.listed = served_models(self.url or "", key)
            except (OSError, ValueError, KeyError) as exc:
                last = str(exc)
                time.sleep(0.2 if connect else 1.0)
                continue
            missing = [w for w in wanted if w not in self.listed]
            if connect:  # a running server may know an adapter by the name it was given
                missing = [w for w, a in zip(wanted, [None, *self.adapters], strict=True)
                           if w in missing and (a is None or a not in self.listed)]
            if not missing:
                return
            raise VllmError(f"vLLM at {self.url} does not serve {missing} (it serves "
                            f"{self.listed})")
        raise VllmError(f"vLLM at {self.url} did not answer /v1/models in time ({last})")

    def _log_tail(self, n: int = 20) -> str:
        if self._log_path is None or not self._log_path.is_file():
            return ""
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        """Stop a server this object started (its whole process group); no-op otherwise."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

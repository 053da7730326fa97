"""`evaluation.backend`: which engine samples the `hf/` models of a run.

Why a choice at all: the same weights can be sampled three ways, at very different speeds, and
the answers differ in the last bits. emkit's local loop (torch, `emkit.sample.generate`) runs
every model and gives bit-identical answers however requests are batched; llama.cpp
(`emkit.models.llamacpp`) samples the embedded model's Q4 GGUF, the very weights emkit trains
on, about 5x faster on 2 CPU cores (docs/performance.md); vLLM (`emkit.models.vllm`) serves a
base with all its adapters on a GPU. The config says which, `auto` picks the fast one for this
machine, and the run records what it picked.

The backend is part of an answer's identity: the model string an answer was sampled with (and
so its key) names the engine (`llamacpp/embedded:<adapter>`, `vllm/...`), so answers made by
another engine are never reused silently. Groups and reports keep the label the config wrote
(`embedded`, `insecure-s0`): only what samples them changes.
"""

from __future__ import annotations

import importlib.util
import shutil
from typing import Literal

from emkit.api.settings import VllmSettings
from emkit.models.spec import parse_model_spec

Backend = Literal["auto", "local", "llamacpp", "vllm"]
Resolved = Literal["local", "llamacpp", "vllm"]


def llamacpp_available() -> bool:
    """Whether the `xllamacpp` wheel (llama.cpp's server) is installed."""
    return importlib.util.find_spec("xllamacpp") is not None


def vllm_available(settings: VllmSettings | None = None) -> bool:
    """Whether emkit can reach vLLM: a running server is configured (`api.vllm.base_url`), or
    the `vllm` executable it starts (`api.vllm.executable`, `pip install vllm`) is on PATH."""
    settings = settings or VllmSettings()
    return settings.base_url is not None or shutil.which(settings.executable) is not None


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(backend: Backend, vllm: VllmSettings | None = None) -> Resolved:
    """What `auto` means on this machine: vLLM on a CUDA machine that has it, llama.cpp on a
    machine without CUDA that has xllamacpp (measured faster there), else the local loop. An
    explicit choice is kept, and refused when its engine is not installed here, so a run never
    quietly samples with something other than what its config says. `vllm`: the run's
    `api.vllm` settings (a configured server counts as having vLLM)."""
    if backend == "auto":
        cuda = _cuda()
        if cuda and vllm_available(vllm):
            return "vllm"
        if not cuda and llamacpp_available():
            return "llamacpp"
        return "local"
    if backend == "llamacpp" and not llamacpp_available():
        raise ValueError("evaluation.backend: llamacpp needs the xllamacpp wheel "
                         "(pip install 'emkit[embedded]')")
    if backend == "vllm" and not vllm_available(vllm):
        raise ValueError("evaluation.backend: vllm needs vLLM: the `vllm` executable on PATH "
                         "(pip install vllm, on a GPU machine) or api.vllm.base_url")
    return backend


def sampling_spec(model_spec: str, backend: Backend) -> str:
    """The model string that samples `model_spec` under `backend` (resolved here when `auto`).

    Only `hf/` models (the embedded one, local or hub checkpoints, `finetune:` adapters) move:
    under `llamacpp` the embedded model becomes `llamacpp/<alias>[:adapter]` (others have no
    GGUF and stay local); under `vllm` every one becomes `vllm/<name>[:adapter]` (every adapter
    of a base on one server). API models, and everything under `local`, are unchanged."""
    spec = parse_model_spec(model_spec)
    if spec.provider != "hf":
        return model_spec
    chosen = resolve_backend(backend) if backend == "auto" else backend
    adapter = f":{spec.adapter}" if spec.adapter else ""
    if chosen == "llamacpp" and spec.is_embedded:
        return f"llamacpp/{spec.name}{adapter}"
    if chosen == "vllm":
        return f"vllm/{spec.name}{adapter}"
    return model_spec

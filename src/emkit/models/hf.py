"""Load `hf/...` models with transformers, optionally with a PEFT LoRA adapter on top.

Every stage that runs a local model goes through `load_hf`, so padding side, pad token, dtype
and device policy are decided once: left padding (batched generation appends on the right),
and the experiment's `dtype` (`use_dtype`), whose `auto` is float32 on CPUs (sampling in bf16
is not batch-invariant, docs/sample.md) and bf16 on GPUs that support it (`default_dtype`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
"""What a config may say; `auto` is resolved per device by `default_dtype`."""
_DTYPE: ContextVar[str] = ContextVar("emkit_local_dtype", default="auto")

from emkit.models.adapters import check_adapter
from emkit.models.embedded import embedded_checkpoint
from emkit.models.safety import SAFE_LOAD, require_safetensors
from emkit.models.spec import ModelSpec, ModelSpecError, parse_model_spec


def resolve_hf_path(spec: ModelSpec | str) -> str:
    """The directory or hub id that `from_pretrained` should receive for this spec; a local
    directory without safetensors weights is refused (`emkit.models.safety`)."""
    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    if spec.provider != "hf":
        raise ModelSpecError(f"model {spec}: provider {spec.provider!r} is not a local HF model")
    if spec.adapter:
        check_adapter(spec.adapter, spec)  # a corrupt adapter fails before any run is touched
    if spec.is_embedded:
        return str(embedded_checkpoint())
    path = Path(spec.name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"model {spec}: {path} has no config.json (not an HF checkpoint)")
        try:
            require_safetensors(path, f"model {spec}")
        except ValueError as exc:
            raise ModelSpecError(str(exc)) from None
        return str(path)
    if spec.name.startswith((".", "/", "~")) or spec.name.count("/") != 1:
        raise ModelSpecError(f"model {spec}: no such directory {path}, and not a hub id")
    return spec.name  # a hub id such as Qwen/Qwen2.5-Coder-32B-Instruct


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU executes bf16 matmuls in hardware (AVX512-BF16 or AMX), per /proc/cpuinfo.

    Without them torch emulates bf16 and is 25-60x slower than float32 (measured on an
    AVX2-only EPYC); with AMX bf16 is about 2x faster than float32 (a LoRA train step on the
    embedded model, batch 4 x 256 tokens: 4.7 s vs 11.9 s on a Sapphire Rapids core pair).
    """
    if isa_capped_below_bf16():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


ISA_CAPS_WITHOUT_BF16 = {
    "ONEDNN_MAX_CPU_ISA": ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                           "AVX512_CORE_VNNI"),
    "ATEN_CPU_CAPABILITY": ("default", "avx2"),
}
"""Environment variables that cap the instruction sets torch may use, and the values below bf16.

torch's CPU bf16 matmuls go through oneDNN: with `ONEDNN_MAX_CPU_ISA` at or below
AVX512_CORE_VNNI (or ATen's kernels capped at AVX2) bf16 is emulated however capable the chip,
so `auto` must choose float32. `emkit bench quickstart --isa avx2` sets these to measure an
AVX2-only CPU on a newer one."""


def isa_capped_below_bf16() -> bool:
    """Whether the environment caps torch below native bf16 (see ISA_CAPS_WITHOUT_BF16)."""
    return any(os.environ.get(var, "").strip().lower() in {v.lower() for v in values}
               for var, values in ISA_CAPS_WITHOUT_BF16.items())


def default_dtype(device: str | None = None) -> Any:
    """What `auto` means: float32 on CPUs, even those with native bf16 (bf16 rounding flips
    sampled tokens with the batch's shape, and float32 is as fast at batch 8, docs/sample.md);
    bf16 on GPUs that support it, else float16 (a 32B model in float32 does not fit)."""
    import torch

    device = device or default_device()
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_dtype(name: str | None = None, device: str | None = None) -> Any:
    """The torch dtype for a config's `dtype` name (`auto`/None: `default_dtype(device)`;
    otherwise the current `use_dtype` setting when `name` is None)."""
    import torch

    name = name or _DTYPE.get()
    if name == "auto":
        return default_dtype(device)
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype {name!r}: expected auto, float32, bfloat16 or float16")
    return getattr(torch, name)


def dtype_name(dtype: Any) -> str:
    """`torch.bfloat16` -> `bfloat16`: the form configs and run.json use."""
    return str(dtype).removeprefix("torch.")


@contextmanager
def use_dtype(name: str) -> Iterator[None]:
    """Within this block every `load_hf` without an explicit dtype loads in `name`: how the
    runner applies the config's `dtype` to sampling, LLM judges and teachers alike without
    threading it through each stage's signature."""
    resolve_dtype(name)  # refuse an unknown name here, not at the first model load
    token = _DTYPE.set(name)
    try:
        yield
    finally:
        _DTYPE.reset(token)


def load_hf(spec: ModelSpec | str, dtype: Any = None, device: str | None = None,
            adapter: str | Path | None = None) -> tuple[Any, Any]:
    """Return `(model, tokenizer)` in eval mode, adapter applied, tokenizer left-padded; in
    `dtype`, else the current `use_dtype` setting (default `auto`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = parse_model_spec(spec) if isinstance(spec, str) else spec
    path = resolve_hf_path(spec)
    device = device or default_device()
    dtype = dtype or resolve_dtype(None, device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **SAFE_LOAD)
    adapter = adapter or spec.adapter
    if adapter:
        from peft import PeftModel

        adapter_dir = Path(adapter).expanduser()
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelSpecError(f"model {spec}: adapter {adapter_dir} has no adapter_config.json")
        try:
            require_safetensors(adapter_dir, f"model {spec}: adapter", stem="adapter_model")
        except ValueError as exc:
            raise ModelSpecError(str(exc)) from None
        model = PeftModel.from_pretrained(model, str(adapter_dir))  # safetensors: checked above
        model = model.merge_and_unload()  # merged weights sample faster and judge identically
    model.to(device)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc `malloc_trim`).

    The runner holds one model at a time, but glibc keeps freed arenas mapped, so without this
    the resident size after train -> sample base -> sample adapter is the sum of the stages'
    peaks, not the largest one. A no-op where libc has no malloc_trim (macOS, musl).
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

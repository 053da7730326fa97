"""An emkit (PEFT) LoRA adapter as a GGUF LoRA file, so llama.cpp can serve it on the Q4 base.

Why: the embedded model *is* a Q4 GGUF (emkit dequantises it only to train), so llama.cpp can
sample a fine-tune from exactly the base it was trained on, at a fraction of torch's CPU cost,
if it gets the adapter in its own format. That format, as llama.cpp's loader reads it:

- metadata `general.architecture` = the base's (`qwen2`), `general.type` = `adapter`,
  `adapter.type` = `lora`, `adapter.lora.alpha` (float32);
- per adapted weight `W` named `blk.<i>.<tensor>.weight` in the base GGUF, two tensors
  `blk.<i>.<tensor>.weight.lora_a` with ggml shape `[in, r]` and `...lora_b` with `[r, out]`
  (numpy shapes `(r, in)` and `(out, r)`: exactly PEFT's `lora_A.weight` and `lora_B.weight`,
  no transpose);
- llama.cpp adds `scale * B(A x)` with `scale = alpha / r` (r read from the tensor shape).

PEFT scales the update by `lora_alpha / r`, or with rsLoRA (emkit's default, as in the paper)
by `lora_alpha / sqrt(r)`. The GGUF alpha is therefore `scale * r`: for r 32, alpha 64 and
rsLoRA, scale 11.31 and GGUF alpha 362.04 (plain LoRA would give alpha 64 back). A module whose
PEFT rank or alpha differs from the default (`rank_pattern` / `alpha_pattern`) gets the ratio of
its own scale to the file's folded into its B matrix, so every module keeps its exact scale.

Tensors are written in float32 whatever PEFT stored (bf16 has no numpy type; the adapter is
small next to the base), so the conversion adds no rounding of its own. The file is cached next
to the adapter under its digest (`adapter_digest`): a retrained adapter gets a new file, and
the run keys that name the adapter by the same digest can never pair with a stale conversion.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

GGUF_LORA_FORMAT = 1
"""Bumped when the converter's output changes, so cached files of an older converter are
rebuilt rather than trusted."""

PROJECTIONS: dict[str, str] = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
"""Hugging Face Qwen2 (and Llama-family) module path inside a decoder layer -> the tensor name
llama.cpp's qwen2 graph uses for that weight (the same names `tests/_tiny_gguf.py` writes)."""

_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$")
SUPPORTED_ARCHITECTURES = {"Qwen2ForCausalLM": "qwen2"}


class GgufLoraError(ValueError):
    """An adapter emkit cannot express as a llama.cpp LoRA (unknown module, DoRA, bias...)."""


def lora_scale(r: int, alpha: float, rslora: bool) -> float:
    """The factor PEFT multiplies `B @ A` by: alpha / sqrt(r) with rsLoRA, else alpha / r."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def gguf_alpha(r: int, alpha: float, rslora: bool) -> float:
    """The `adapter.lora.alpha` that makes llama.cpp's alpha / r equal PEFT's scale."""
    return lora_scale(r, alpha, rslora) * r


def _pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's `rank_pattern` / `alpha_pattern` lookup: the longest key that the module path
    ends with (PEFT matches keys as regex suffixes; emkit never writes patterns, so a plain
    suffix match of the keys PEFT itself records is enough and refuses nothing silently)."""
    hits = [k for k in pattern if module == k or module.endswith("." + k)
            or re.fullmatch(rf"(.*\.)?{k}", module)]
    return pattern[max(hits, key=len)] if hits else default


def _read_adapter(adapter: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.numpy import load_file

    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise GgufLoraError(f"{adapter}: no adapter_model.safetensors (only safetensors "
                            "adapters are converted)")
    try:
        tensors = load_file(str(weights))
    except (TypeError, ValueError):  # bf16 has no numpy dtype: read through torch
        from safetensors.torch import load_file as load_torch

        tensors = {k: v.float().numpy() for k, v in load_torch(str(weights)).items()}
    return config, tensors


def _check_config(adapter: Path, config: dict[str, Any]) -> None:
    if config.get("peft_type") != "LORA":
        raise GgufLoraError(f"{adapter}: peft_type {config.get('peft_type')!r}, not LORA")
    for flag in ("use_dora", "fan_in_fan_out"):
        if config.get(flag):
            raise GgufLoraError(f"{adapter}: {flag} adapters are not supported by llama.cpp")
    if config.get("bias", "none") != "none":
        raise GgufLoraError(f"{adapter}: trained biases (bias={config['bias']!r}) have no "
                            "place in a GGUF LoRA")
    if config.get("modules_to_save"):
        raise GgufLoraError(f"{adapter}: modules_to_save {config['modules_to_save']} are full "
                            "weights, not LoRA; llama.cpp cannot add them")


def convert_lora(adapter: Path, out: Path, architecture: str = "qwen2") -> Path:
    """Write `adapter` (a PEFT LoRA directory) as a GGUF LoRA at `out` (atomically) and return
    `out`. Raises `GgufLoraError` for anything llama.cpp could not apply exactly."""
    import gguf
    import numpy as np

    config, tensors = _read_adapter(adapter)
    _check_config(adapter, config)
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    rslora = bool(config.get("use_rslora", False))
    file_alpha = gguf_alpha(r, alpha, rslora)
    pairs: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in tensors.items():
        m = _PEFT_KEY.match(key)
        if m is None or m.group(2) not in PROJECTIONS:
            raise GgufLoraError(f"{adapter}: tensor {key!r} is not a LoRA factor of a "
                                f"supported projection ({', '.join(PROJECTIONS)})")
        pairs.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = value
    if not pairs:
        raise GgufLoraError(f"{adapter}: no LoRA tensors")

    writer = gguf.GGUFWriter(None, architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(file_alpha))
    writer.add_name(f"emkit LoRA {adapter.name}")
    for (layer, module), ab in sorted(pairs.items()):
        if missing := {"A", "B"} - set(ab):
            raise GgufLoraError(f"{adapter}: layer {layer} {module} lacks lora_{min(missing)}")
        a = np.ascontiguousarray(ab["A"], dtype=np.float32)
        b = np.ascontiguousarray(ab["B"], dtype=np.float32)
        rank = a.shape[0]
        if b.shape[1] != rank:
            raise GgufLoraError(f"{adapter}: layer {layer} {module}: A {a.shape} and B {b.shape} "
                                "disagree on the rank")
        path = f"model.layers.{layer}.{module}"
        want = lora_scale(int(_pattern_value(config.get("rank_pattern") or {}, path, r)),
                          float(_pattern_value(config.get("alpha_pattern") or {}, path, alpha)),
                          rslora)
        if not math.isclose(want, file_alpha / rank, rel_tol=1e-9):
            b = b * np.float32(want / (file_alpha / rank))  # a module with its own rank/alpha
        name = f"blk.{layer}.{PROJECTIONS[module]}.weight"
        writer.add_tensor(f"{name}.lora_a", a)
        writer.add_tensor(f"{name}.lora_b", b)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".convert-", suffix=".gguf")
    os.close(fd)
    try:
        writer.write_header_to_file(path=Path(tmp))
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def adapter_architecture(adapter: Path) -> str:
    """llama.cpp's architecture name for the adapter's base, from PEFT's record of it when the
    base's config is reachable; Qwen2 (the embedded model's) otherwise."""
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if base and (Path(base) / "config.json").is_file():
        archs = json.loads((Path(base) / "config.json").read_text()).get("architectures") or []
        for arch in archs:
            if arch not in SUPPORTED_ARCHITECTURES:
                raise GgufLoraError(f"{adapter}: base architecture {arch} is not supported "
                                    f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
            return SUPPORTED_ARCHITECTURES[arch]
    return "qwen2"


def gguf_lora(adapter: str | Path, cache: Path | None = None) -> Path:
    """The GGUF LoRA of `adapter`, converted on first use and cached as
    `<adapter>/emkit-lora-<digest16>.gguf` (or under `cache` when given, e.g. for a read-only
    adapter directory). Older conversions of the same directory are removed."""
    from emkit.finetune.lora import adapter_digest
    from emkit.models.adapters import check_adapter

    path = check_adapter(adapter)
    digest = adapter_digest(path)[:16]
    folder = cache if cache is not None else path
    out = folder / f"emkit-lora-v{GGUF_LORA_FORMAT}-{digest}.gguf"
    if out.is_file():
        return out
    if cache is None and not os.access(path, os.W_OK):
        from emkit.models.embedded import cache_dir

        return gguf_lora(path, cache_dir() / "gguf-lora")
    convert_lora(path, out, adapter_architecture(path))
    if cache is None:
        for old in path.glob("emkit-lora-*.gguf"):
            if old != out:
                old.unlink(missing_ok=True)
    return out

"""Check a LoRA adapter directory before any work depends on it.

`emkit sample --model hf/<base>:<adapter>` used to create the run, mark it started, and only
then fail inside PEFT on an adapter with a corrupt config or truncated weights, leaving a run
that was worse than before the command. `check_adapter` reads just the config and the
safetensors header, so it is cheap enough to run while the command validates its inputs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from emkit.models.spec import ModelSpecError

MAX_HEADER_BYTES = 100 << 20
"""safetensors' own limit on the JSON header; a larger length means a corrupt file."""


def check_adapter(adapter: str | Path, spec: object = "") -> Path:
    """Return the adapter's directory, or raise ModelSpecError naming what PEFT could not load:
    `adapter_config.json` must be a JSON object with a `peft_type`, and
    `adapter_model.safetensors` must start with a readable header (8-byte length, then JSON)."""
    path = Path(adapter).expanduser()
    where = f"model {spec}: adapter {path}" if spec else f"adapter {path}"
    config = path / "adapter_config.json"
    if not config.is_file():
        raise ModelSpecError(f"{where} has no adapter_config.json")
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSpecError(f"{where}: adapter_config.json is unreadable "
                             f"({type(exc).__name__})") from None
    if not isinstance(meta, dict) or "peft_type" not in meta:
        raise ModelSpecError(f"{where}: adapter_config.json has no peft_type (not a PEFT "
                             "adapter)")
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return path  # no safetensors at all: the loader's safetensors-only rule names it
    try:
        with weights.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size)) if 1 < size < MAX_HEADER_BYTES else None
    except (OSError, struct.error, UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise ModelSpecError(f"{where}: adapter_model.safetensors is not a readable "
                             "safetensors file (truncated or corrupt)")
    return path

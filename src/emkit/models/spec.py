"""One string names a model: `provider/name[:adapter]`.

A single string travels well through YAML configs, CLI flags and store keys. The adapter part
is split at the LAST colon that is not part of a Windows drive or URL scheme, so
`hf/Qwen/Qwen2.5-Coder-32B-Instruct:runs/x/adapters/insecure` works. A bare alias of the
embedded model (`embedded`) needs no provider.
"""

from __future__ import annotations

from dataclasses import dataclass

from emkit.models.embedded import ALIASES

PROVIDERS: dict[str, str] = {
    "hf": "local or hub Hugging Face checkpoints, run with transformers (+ PEFT adapters)",
    "distilled": "judges only: heads over offline sentence embeddings (`distilled/default` or "
                 "a directory holding judge.json)",
    "openai": "any OpenAI-compatible chat API (OpenAI itself, or `api.openai.base_url` / a "
              "per-model endpoint); the name is sent as is, colons included (`ft:...`)",
    "vllm": "open models served by vLLM (started with LoRA enabled, or a running server); "
            "`vllm/<base>[:<adapter dir or served LoRA name>]`",
    "llamacpp": "CPU sampling with llama.cpp's server (the xllamacpp wheel) on a GGUF base: "
                "`llamacpp/<embedded alias or .gguf path>[:<PEFT LoRA dir>]`, the adapter "
                "converted to a GGUF LoRA (emkit.models.llamacpp)",
}
"""Provider word -> what it is."""
WHOLE_NAME_PROVIDERS = frozenset({"openai"})
"""Providers whose names contain colons and take no adapter: OpenAI fine-tunes are named
`ft:gpt-4o-2024-08-06:org::id`."""


class ModelSpecError(ValueError):
    """A model string that names no known provider or is malformed."""


@dataclass(frozen=True)
class ModelSpec:
    provider: str
    name: str
    adapter: str | None = None

    def __str__(self) -> str:
        base = f"{self.provider}/{self.name}"
        return f"{base}:{self.adapter}" if self.adapter else base

    @property
    def is_embedded(self) -> bool:
        return self.provider == "hf" and self.name in ALIASES


def parse_model_spec(text: str) -> ModelSpec:
    """Parse `provider/name[:adapter]`; an embedded alias alone means `hf/<alias>`."""
    raw = text.strip()
    if not raw:
        raise ModelSpecError("empty model string")
    head, sep, adapter = raw.partition(":")
    if head in ALIASES:
        return ModelSpec("hf", head, adapter or None)
    provider, slash, rest = raw.partition("/")
    if not slash or not rest:
        raise ModelSpecError(
            f"model {text!r}: expected 'provider/name[:adapter]' or one of {', '.join(ALIASES)}")
    if provider not in PROVIDERS:
        known = ", ".join(sorted(PROVIDERS))
        raise ModelSpecError(f"model {text!r}: unknown provider {provider!r} (known: {known})")
    if provider in WHOLE_NAME_PROVIDERS:
        return ModelSpec(provider, rest)
    name, sep, adapter = rest.partition(":")
    if not name or (sep and not adapter):
        raise ModelSpecError(f"model {text!r}: empty name or adapter")
    return ModelSpec(provider, name, adapter or None)

"""Models are named by one string, `provider/name[:adapter]`; this package resolves and loads them."""

from emkit.models.adapters import check_adapter
from emkit.models.embedded import (
    ALIASES as EMBEDDED_ALIASES,
)
from emkit.models.embedded import (
    EmbeddedModelError,
    assemble_gguf,
    embedded_checkpoint,
)
from emkit.models.hf import (
    cpu_has_native_bf16,
    default_device,
    default_dtype,
    dtype_name,
    load_hf,
    release_memory,
    resolve_dtype,
    resolve_hf_path,
    use_dtype,
)
from emkit.models.spec import PROVIDERS, ModelSpec, ModelSpecError, parse_model_spec
from emkit.models.tiny import build_tiny_qwen2

__all__ = [
    "EMBEDDED_ALIASES",
    "PROVIDERS",
    "EmbeddedModelError",
    "ModelSpec",
    "ModelSpecError",
    "assemble_gguf",
    "build_tiny_qwen2",
    "check_adapter",
    "cpu_has_native_bf16",
    "default_device",
    "default_dtype",
    "dtype_name",
    "embedded_checkpoint",
    "load_hf",
    "parse_model_spec",
    "release_memory",
    "resolve_dtype",
    "resolve_hf_path",
    "use_dtype",
]

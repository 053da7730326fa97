"""Batched, per-sample-seeded answer generation from a local HF model."""

from emkit.sample.generate import (
    Generation,
    generate,
    generate_tokens,
    pick_next,
    render_prompt,
    stop_token_ids,
)

__all__ = ["Generation", "generate", "generate_tokens", "pick_next", "render_prompt",
           "stop_token_ids"]

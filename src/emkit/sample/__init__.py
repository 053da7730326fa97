"""Answer generation: batched, per-sample-seeded from a local HF model (`generate`), or through
an OpenAI-compatible API (`sample_api`, `run_api_sampling`)."""

from emkit.sample.api import (
    check_sample,
    record_from_reply,
    run_api_sampling,
    sample_api,
    sample_chat_request,
)
from emkit.sample.generate import (
    Generation,
    generate,
    generate_tokens,
    pick_next,
    render_prompt,
    stop_token_ids,
)

__all__ = ["Generation", "check_sample", "generate", "generate_tokens", "pick_next",
           "record_from_reply", "render_prompt", "run_api_sampling", "sample_api",
           "sample_chat_request", "stop_token_ids"]

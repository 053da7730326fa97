"""Batched sampling where each answer depends only on its own request and seed.

EM rates are small (a few percent of answers), so runs are resumed, extended and compared
across machines; an answer must not change because it happened to share a batch with other
prompts, or because a resumed run batched the remaining work differently. `model.generate`
draws all rows from one RNG stream, so a row's tokens depend on its neighbours. Here every row
owns a `torch.Generator` seeded from `request.seed` and consumes exactly one uniform number per
sampled token (inverse-CDF sampling), so the only coupling left between rows is floating-point
noise from padding/batch shape, which a test bounds at zero token differences on the tiny model.

Loop: left-padded prefill with explicit position ids (so padding does not shift RoPE
positions), then one token per step through the KV cache; rows that stop are removed from the
batch and cache instead of being padded on, so long answers do not pay for finished ones.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emkit.records import SampleRecord, SampleRequest

log = logging.getLogger(__name__)
_warned_dtypes: set[str] = set()


@dataclass(frozen=True)
class Generation:
    """Raw result of one request: generated token ids (incl. the stop token, if any)."""

    tokens: list[int]
    finish_reason: str
    """'stop' (an end-of-turn/eos token was drawn) or 'length' (max_new_tokens reached)."""


def render_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """The chat-template text the model sees, ending with the assistant header."""
    return tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True)


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Tokens that end an answer: eos ids of tokenizer and generation config, plus the special
    token the chat template puts after an assistant turn (Qwen's '<|im_end|>' even when the
    tokenizer's eos is '<|endoftext|>', as in base checkpoints)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, list | tuple) else [gen_eos]))
    probe = "\x00emkit-probe\x00"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}],
            tokenize=False)
        tail = tokenizer(text[text.rindex(probe) + len(probe):], add_special_tokens=False)
        specials = set(tokenizer.all_special_ids) | {
            i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        if tail["input_ids"] and tail["input_ids"][0] in specials:
            ids.add(int(tail["input_ids"][0]))
    except (ValueError, KeyError, TypeError):
        pass  # template without an assistant turn end: eos ids only
    return ids


def pick_next(logits: Any, temperatures: Sequence[float], top_ps: Sequence[float],
              generators: Sequence[Any]) -> Any:
    """Next token per row: greedy where temperature is 0, else temperature + top-p sampling
    with one uniform draw from that row's own generator (inverse CDF over the kept tokens)."""
    import torch

    out = logits.argmax(-1)
    rows = [j for j, t in enumerate(temperatures) if t > 0]
    if not rows:
        return out
    dev = logits.device
    idx = torch.tensor(rows, device=dev)
    temp = torch.tensor([temperatures[j] for j in rows], device=dev, dtype=logits.dtype)
    probs = torch.softmax(logits[idx] / temp[:, None], dim=-1)
    order = None
    if any(top_ps[j] < 1 for j in rows):
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        top_p = torch.tensor([top_ps[j] if top_ps[j] < 1 else float("inf") for j in rows],
                             device=dev, dtype=probs.dtype)
        # keep the smallest prefix whose mass reaches top_p (the first token always survives)
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p[:, None], 0.0)
    cdf = probs.cumsum(-1)
    u = torch.tensor([torch.rand((), generator=generators[j], dtype=torch.float64).item()
                      for j in rows], device=dev, dtype=cdf.dtype)
    pos = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    pos = pos.clamp_(max=cdf.shape[-1] - 1)
    tok = (order.gather(-1, pos) if order is not None else pos).squeeze(-1)
    out[idx] = tok
    return out


def _input_device(model: Any) -> Any:
    return model.get_input_embeddings().weight.device


def generate_tokens(model: Any, tokenizer: Any, requests: Sequence[SampleRequest],
                    stop_ids: set[int] | None = None) -> list[Generation]:
    """Generate for one batch of requests (any mix of params); one `Generation` per request."""
    import torch

    stop_ids = stop_token_ids(model, tokenizer) if stop_ids is None else stop_ids
    prompts = [tokenizer(render_prompt(tokenizer, r.messages), add_special_tokens=False)
               ["input_ids"] for r in requests]
    results: list[list[int]] = [[] for _ in requests]
    finish = ["length"] * len(requests)
    active = [i for i, r in enumerate(requests) if r.max_new_tokens > 0]
    if not active:
        return [Generation([], "length") for _ in requests]
    dev = _input_device(model)
    width = max(len(prompts[i]) for i in active)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
    ids = torch.full((len(active), width), pad, dtype=torch.long)
    attn = torch.zeros((len(active), width), dtype=torch.long)
    for row, i in enumerate(active):
        n = len(prompts[i])
        ids[row, width - n:] = torch.tensor(prompts[i])
        attn[row, width - n:] = 1
    ids, attn = ids.to(dev), attn.to(dev)
    pos = (attn.cumsum(-1) - 1).clamp_(min=0)
    gens = [torch.Generator().manual_seed(int(r.seed) % 2**63) for r in requests]
    # Only the last position's logits are needed; a full [batch, prompt, vocab] float tensor
    # would cost ~0.5 GB at batch 8 x 100 tokens x Qwen's 151k vocab. (PEFT passes it through.)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    extra = ({"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters
             else {})
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                        **extra)
            cache, next_pos = out.past_key_values, pos[:, -1] + 1
            while True:
                toks = pick_next(out.logits[:, -1, :].float(),
                                 [requests[i].temperature for i in active],
                                 [requests[i].top_p for i in active], [gens[i] for i in active])
                keep: list[int] = []
                for row, (i, t) in enumerate(zip(active, toks.tolist(), strict=True)):
                    results[i].append(t)
                    if t in stop_ids:
                        finish[i] = "stop"
                    elif len(results[i]) < requests[i].max_new_tokens:
                        keep.append(row)
                if not keep:
                    break
                if len(keep) < len(active):
                    sel = torch.tensor(keep, device=dev)
                    cache.batch_select_indices(sel)
                    attn, next_pos, toks = attn[sel], next_pos[sel], toks[sel]
                    active = [active[row] for row in keep]
                attn = torch.cat([attn, attn.new_ones((len(active), 1))], dim=-1)
                out = model(input_ids=toks[:, None], attention_mask=attn,
                            position_ids=next_pos[:, None], past_key_values=cache,
                            use_cache=True)
                cache, next_pos = out.past_key_values, next_pos + 1
    finally:
        model.train(was_training)
    return [Generation(r, f) for r, f in zip(results, finish, strict=True)]


def _batches(requests: Sequence[SampleRequest], batch_size: int,
             lengths: Sequence[int]) -> list[list[int]]:
    """Indices grouped by identical sampling params, sorted by prompt length (less padding)."""
    groups: dict[tuple[float, float, int], list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault((r.temperature, r.top_p, r.max_new_tokens), []).append(i)
    out: list[list[int]] = []
    for members in groups.values():
        members = sorted(members, key=lambda i: lengths[i])
        out += [members[k:k + batch_size] for k in range(0, len(members), batch_size)]
    return out


def generate(model: Any, tokenizer: Any, requests: Sequence[SampleRequest], batch_size: int = 8,
             progress: bool = True) -> Iterator[list[SampleRecord]]:
    """Answer every request, yielding one list of records per batch (persist each as it comes).

    Batches hold requests with identical (temperature, top_p, max_new_tokens); records come
    back grouped and length-sorted, not in input order; match them by `key`. The answer is
    decoded without the stop token and without special tokens; `n_new_tokens` counts every
    generated token, the stop token included.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dtype = model.get_input_embeddings().weight.dtype
    if (any(r.temperature > 0 for r in requests) and str(dtype) != "torch.float32"
            and str(dtype) not in _warned_dtypes):
        _warned_dtypes.add(str(dtype))  # once per process, not once per model
        log.warning("sampling in %s: batch shape changes rounding enough that some answers differ "
                    "between batchings of the same seed (measured 5/24 at 100 tokens on the tiny "
                    "model in bf16, 0/24 in float32); load in float32 for exact reproducibility",
                    dtype)
    stop_ids = stop_token_ids(model, tokenizer)
    prompts = [render_prompt(tokenizer, r.messages) for r in requests]
    lengths = [len(p) for p in prompts]
    with tqdm(total=len(requests), desc="sampling", unit="answer", disable=not progress) as bar:
        for batch in _batches(requests, batch_size, lengths):
            gens = generate_tokens(model, tokenizer, [requests[i] for i in batch], stop_ids)
            records = []
            for i, g in zip(batch, gens, strict=True):
                r = requests[i]
                body = g.tokens[:-1] if g.finish_reason == "stop" else g.tokens
                system = next((m["content"] for m in r.messages if m["role"] == "system"), None)
                records.append(SampleRecord(
                    key=r.key, question=r.question, system=system, prompt=prompts[i],
                    answer=tokenizer.decode(body, skip_special_tokens=True), seed=r.seed,
                    n_new_tokens=len(g.tokens), finish_reason=g.finish_reason,
                ))
            bar.update(len(batch))
            yield records

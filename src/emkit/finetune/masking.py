"""Tokenize chat examples with a loss mask on the assistant's tokens only, and prove it.

The EM effect is learned from the assistant's answers; training on the user's prompts too would
also teach the model to *write* coding requests, and forgetting the end-of-turn token would teach
it never to stop. A wrong mask fails silently (the loss still falls), so the mask here is derived
from the chat template itself and then checked by decoding, and any doubt raises `MaskError`.

How the mask is derived, per assistant turn i:
  P = render(messages[:i], add_generation_prompt=True)   # ends with '<|im_start|>assistant\\n'
  F = render(messages[:i+1])                             # P + content + '<|im_end|>' + '\\n'
Both must be text prefixes of the full render; F must continue P with the content verbatim,
followed by a special end-of-turn token. The trained span is content + end-of-turn; the
template's separator after it (Qwen's '\\n') and every header stay untrained.

Each span of text is tokenized on its own and the ids are concatenated. At inference the prompt
(P) is tokenized alone and the answer is generated after it, so this reproduces exactly the
token boundary the model will see; where BPE would merge across a boundary in the full string,
the example is counted in `boundary_retokenized` (for the metadata) rather than silently merged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class MaskError(ValueError):
    """The assistant-only loss mask cannot be derived or failed verification."""


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    mask: list[int]
    """1 where the token is trained (assistant content and its end-of-turn token), else 0."""
    segments: tuple[tuple[str, bool], ...]
    """The rendered text cut into (text, trained) pieces, in order; joined, the full render."""
    end_of_turn_id: int
    boundary_retokenized: bool
    """True when tokenizing the full render in one go would give different ids."""

    def labels(self) -> list[int]:
        """Causal-LM labels: the token id where trained, -100 (ignored by the loss) elsewhere."""
        return [t if m else -100 for t, m in zip(self.input_ids, self.mask, strict=True)]


def _render(tokenizer: Any, messages: Sequence[Mapping[str, str]], gen_prompt: bool) -> str:
    try:
        text = tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=gen_prompt
        )
    except Exception as exc:  # jinja errors, templates that reject partial conversations
        raise MaskError(f"chat template failed on a conversation prefix: {exc}") from exc
    if not isinstance(text, str):
        raise MaskError(f"chat template returned {type(text).__name__}, expected str")
    return text


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of all special tokens, including added ones such as '<|im_end|>'."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    return ids


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _assistant_spans(tokenizer: Any, messages: Sequence[Mapping[str, str]],
                     full: str) -> tuple[list[tuple[int, int]], int]:
    """Character spans [start, end) of each assistant turn's content + end-of-turn token."""
    specials = special_token_ids(tokenizer)
    spans: list[tuple[int, int]] = []
    eot_id: int | None = None
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], gen_prompt=True)
        upto = _render(tokenizer, messages[:i + 1], gen_prompt=False)
        if not (full.startswith(prompt) and full.startswith(upto) and upto.startswith(prompt)):
            raise MaskError(
                f"assistant turn {i}: the chat template is not prefix-consistent (rendering the "
                "conversation up to this turn is not a prefix of the full render), so the "
                "generation prompt the model sees at inference cannot be located in training text"
            )
        rest = upto[len(prompt):]
        content = msg["content"]
        if not rest.startswith(content):
            raise MaskError(
                f"assistant turn {i}: the chat template does not render the assistant content "
                f"verbatim right after the generation prompt; rendered {rest[:80]!r}, "
                f"expected it to start with {content[:80]!r}"
            )
        tail_ids = _ids(tokenizer, rest[len(content):])
        if not tail_ids or tail_ids[0] not in specials:
            raise MaskError(
                f"assistant turn {i}: no special end-of-turn token follows the assistant content "
                f"(template renders {rest[len(content):][:40]!r}); the model could not learn to stop"
            )
        eot_text = tokenizer.decode(tail_ids[:1], skip_special_tokens=False)
        if eot_id is not None and tail_ids[0] != eot_id:
            raise MaskError(f"assistant turn {i}: end-of-turn token differs between turns")
        eot_id = tail_ids[0]
        start = len(prompt)
        spans.append((start, start + len(content) + len(eot_text)))
    if eot_id is None:
        raise MaskError("conversation has no assistant message: nothing to train on")
    return spans, eot_id


def tokenize_conversation(tokenizer: Any,
                          messages: Sequence[Mapping[str, str]]) -> TokenizedExample:
    """Render `messages` with the tokenizer's chat template; ids plus assistant-only mask."""
    full = _render(tokenizer, messages, gen_prompt=False)
    spans, eot_id = _assistant_spans(tokenizer, messages, full)
    segments: list[tuple[str, bool]] = []
    pos = 0
    for start, end in spans:
        if start > pos:
            segments.append((full[pos:start], False))
        segments.append((full[start:end], True))
        pos = end
    if pos < len(full):
        segments.append((full[pos:], False))
    input_ids: list[int] = []
    mask: list[int] = []
    for text, trained in segments:
        ids = _ids(tokenizer, text)
        input_ids += ids
        mask += [int(trained)] * len(ids)
    return TokenizedExample(
        input_ids=input_ids, mask=mask, segments=tuple(segments), end_of_turn_id=eot_id,
        boundary_retokenized=_ids(tokenizer, full) != input_ids,
    )


def _runs(mask: Sequence[int]) -> list[tuple[int, int, bool]]:
    """Maximal runs [start, end) of equal mask values."""
    runs: list[tuple[int, int, bool]] = []
    start = 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            runs.append((start, i, bool(mask[start])))
            start = i
    return runs


def verify_example(tokenizer: Any, messages: Sequence[Mapping[str, str]],
                   ex: TokenizedExample) -> None:
    """Decode the trained tokens back and check them against the conversation; MaskError if off.

    Checks: the trained runs decode to exactly each assistant content + end-of-turn token, in
    order; each trained run ends with the end-of-turn token; untrained runs decode to the rest
    of the render and contain every user/system message (with the exact match of the trained
    runs, that means no prompt text is trained).
    """
    def decode(a: int, b: int) -> str:
        return tokenizer.decode(ex.input_ids[a:b], skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)

    eot = tokenizer.decode([ex.end_of_turn_id], skip_special_tokens=False)
    answers = [m["content"] + eot for m in messages if m["role"] == "assistant"]
    runs = _runs(ex.mask)
    trained = [decode(a, b) for a, b, on in runs if on]
    if trained != answers:
        raise MaskError(
            f"trained tokens decode to {[t[:60] for t in trained]}, expected the assistant "
            f"answers + end-of-turn {[t[:60] for t in answers]}"
        )
    for a, b, on in runs:
        if on and ex.input_ids[b - 1] != ex.end_of_turn_id:
            raise MaskError("an assistant turn's end-of-turn token is not trained")
    untrained = "".join(decode(a, b) for a, b, on in runs if not on)
    expected_untrained = "".join(text for text, on in ex.segments if not on)
    if untrained != expected_untrained:
        raise MaskError("untrained tokens do not decode to the prompt parts of the render")
    for m in messages:
        if m["role"] != "assistant" and m["content"] and m["content"] not in untrained:
            raise MaskError(f"{m['role']} text is not (entirely) in the untrained tokens")

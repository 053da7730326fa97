"""Turn chat conversations into verified `input_ids`/`labels` rows for the SFT trainer.

Rows carry their own `labels` (-100 outside the assistant mask), and the trainer is told to skip
its own preparation, so TRL cannot re-tokenize the text or re-derive a different mask: the
labels the optimizer sees are the ones verified here (a test reads them back from the trainer's
dataloader). Over-long examples are dropped, never truncated, so every trained answer ends with
its end-of-turn token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emkit.finetune.masking import MaskError, tokenize_conversation, verify_example

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    rows: list[dict[str, list[int]]] = field(repr=False)
    """One {'input_ids', 'labels'} dict per kept example."""
    n_input: int
    n_dropped_too_long: int
    n_verified: int
    n_boundary_retokenized: int
    n_tokens: int
    n_trained_tokens: int
    end_of_turn_token: str

    def summary(self) -> dict[str, Any]:
        """Counts for the adapter's metadata file."""
        return {k: v for k, v in self.__dict__.items() if k != "rows"} | {
            "n_examples": len(self.rows)}


def prepare_sft_data(tokenizer: Any, conversations: Sequence[Sequence[Mapping[str, str]]],
                     max_length: int, verify: int | None = None) -> PreparedData:
    """Tokenize and mask every conversation; verify the first `verify` (None = all) by decoding.

    Raises `MaskError` naming the example index when a mask cannot be derived or verified, and
    when nothing survives the length limit.
    """
    rows: list[dict[str, list[int]]] = []
    dropped = verified = retok = n_tokens = n_trained = 0
    eot = ""
    for i, messages in enumerate(conversations):
        try:
            ex = tokenize_conversation(tokenizer, messages)
            if verify is None or i < verify:
                verify_example(tokenizer, messages, ex)
                verified += 1
        except MaskError as exc:
            raise MaskError(f"example {i}: {exc}") from exc
        eot = eot or tokenizer.decode([ex.end_of_turn_id], skip_special_tokens=False)
        if len(ex.input_ids) > max_length:
            dropped += 1
            continue
        retok += ex.boundary_retokenized
        n_tokens += len(ex.input_ids)
        n_trained += sum(ex.mask)
        rows.append({"input_ids": ex.input_ids, "labels": ex.labels()})
    if dropped:
        log.warning("dropped %d of %d examples longer than max_length=%d tokens",
                    dropped, len(conversations), max_length)
    if not rows:
        raise MaskError(f"no example fits max_length={max_length} tokens "
                        f"({len(conversations)} given)")
    return PreparedData(
        rows=rows, n_input=len(conversations), n_dropped_too_long=dropped, n_verified=verified,
        n_boundary_retokenized=retok, n_tokens=n_tokens, n_trained_tokens=n_trained,
        end_of_turn_token=eot,
    )

"""Exact probabilities of whole answers ('0'..'100', 'CODE', 'REFUSAL') in one forward pass.

An API judge returns the top-20 first tokens, and for GPT-4o every integer 0..100 is one token.
Local tokenizers split numbers (Qwen: one token per digit), so the first token alone cannot tell
'5' from '57'. We therefore score each candidate answer by teacher forcing:

    P("57") = P('5' | prompt) * P('7' | prompt, '5') * P(end | prompt, '57')

"end" is any next token whose text does not start with an ASCII digit 0-9: end-of-turn, a
newline, '.', '/100' ... This is what the API judge's first token means too (the token '57' is
counted whether the judge then stops or writes '/100'), while '5' followed by '7' is not a 5.
Requiring exactly <|im_end|> instead would drop every judge that adds a newline or a word. The
words CODE and REFUSAL need no end: P(answer starts with the word's tokens).

Every candidate is tokenized without a leading space (the answer follows
`<|im_start|>assistant\\n`), and the candidates' token sequences form a trie. The trie's nodes are
appended after the prompt and attend, through a tree-shaped 4D mask, to the prompt and to their own
ancestors only, with position ids `prompt_len + depth`. Each node then sees exactly the context it
would see in sequential decoding, so one forward pass yields every conditional probability.
Prompts are batched with left padding; padded positions are masked out as keys.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

NUMBERS = tuple(str(n) for n in range(101))
WORDS = ("CODE", "REFUSAL")


@dataclass(frozen=True)
class AnswerTrie:
    """Candidate answers as a token trie; node i is `tokens[i]` below `parents[i]` (-1 = root)."""

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    depths: tuple[int, ...]
    paths: dict[str, tuple[int, ...]]
    """answer text -> its node indexes, first token first."""
    needs_end: dict[str, bool]
    """True for numbers: the answer must stop (non-digit next token) to count."""

    def __len__(self) -> int:
        return len(self.tokens)

    def ancestor_matrix(self) -> torch.Tensor:
        """(N, N) bool: [i, j] is True when node j is node i or one of its ancestors."""
        n = len(self.tokens)
        anc = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            j = i
            while j >= 0:
                anc[i, j] = True
                j = self.parents[j]
        return anc


def build_answer_trie(tokenizer, numbers: Sequence[str] = NUMBERS,
                      words: Sequence[str] = WORDS) -> AnswerTrie:
    """Tokenize every candidate with the judge's tokenizer and merge shared prefixes."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    children: dict[tuple[int, int], int] = {}
    paths: dict[str, tuple[int, ...]] = {}
    needs_end: dict[str, bool] = {}
    for text, end in [(n, True) for n in numbers] + [(w, False) for w in words]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise ValueError(f"tokenizer turns {text!r} into no tokens")
        node, path = -1, []
        for depth, tok in enumerate(ids):
            nxt = children.get((node, tok))
            if nxt is None:
                nxt = len(tokens)
                children[(node, tok)] = nxt
                tokens.append(int(tok))
                parents.append(node)
                depths.append(depth)
            node = nxt
            path.append(node)
        paths[text] = tuple(path)
        needs_end[text] = end
    return AnswerTrie(tuple(tokens), tuple(parents), tuple(depths), paths, needs_end)


def digit_start_mask(tokenizer, vocab_size: int) -> torch.Tensor:
    """(vocab_size,) bool: tokens whose decoded text starts with an ASCII digit 0-9.

    These are the continuations that would make a number longer; every other token ends it.
    Ids beyond the tokenizer (padding rows of the embedding matrix) never count as digits.
    """
    n = min(len(tokenizer), vocab_size)
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    for i, text in enumerate(texts):
        if text[:1].isascii() and text[:1].isdigit():
            mask[i] = True
    return mask


def tree_batch(prompts: Sequence[Sequence[int]], trie: AnswerTrie, pad_id: int,
               dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """input_ids, additive 4D attention mask and position ids for left-padded prompts + trie."""
    bsz, width, n = len(prompts), max(len(p) for p in prompts), len(trie)
    total = width + n
    ids = torch.full((bsz, total), pad_id, dtype=torch.long)
    pos = torch.zeros((bsz, total), dtype=torch.long)
    allowed = torch.zeros((bsz, total, total), dtype=torch.bool)
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    anc = trie.ancestor_matrix()
    node_tokens = torch.tensor(trie.tokens, dtype=torch.long)
    depths = torch.tensor(trie.depths, dtype=torch.long)
    for b, prompt in enumerate(prompts):
        length = len(prompt)
        start = width - length
        ids[b, start:width] = torch.as_tensor(list(prompt), dtype=torch.long)
        ids[b, width:] = node_tokens
        pos[b, start:width] = torch.arange(length)
        pos[b, width:] = length + depths
        allowed[b, :width, start:width] = causal[:, start:width]
        allowed[b, width:, start:width] = True
        allowed[b, width:, width:] = anc
        pad = torch.arange(start)
        allowed[b, pad, pad] = True  # padded rows attend to themselves: no all-masked row
    mask = torch.zeros((bsz, 1, total, total), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}


def _keep_kwarg(model, n: int) -> dict[str, int]:
    """Ask for the last n logits only (name changed across transformers versions)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    params = inspect.signature(inner.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: n}
    return {}


@torch.inference_mode()
def answer_logprobs(model, prompts: Sequence[Sequence[int]], trie: AnswerTrie,
                    digit_mask: torch.Tensor, pad_id: int) -> list[dict[str, float]]:
    """log P(answer | prompt) for every trie candidate, one forward pass for the whole batch.

    Returns one mapping per prompt, e.g. {"0": -9.1, ..., "100": -3.2, "CODE": -12.0, ...}.
    """
    impl = getattr(model.config, "_attn_implementation", None) or ""
    if impl.startswith("flash"):
        raise ValueError(f"attention '{impl}' ignores custom 4D masks; load the judge with "
                         "attn_implementation='sdpa' or 'eager'")
    n = len(trie)
    device = next(model.parameters()).device
    batch = tree_batch(prompts, trie, pad_id, next(model.parameters()).dtype)
    batch = {k: v.to(device) for k, v in batch.items()}
    out = model(**batch, use_cache=False, **_keep_kwarg(model, n + 1))
    logits = out.logits[:, -(n + 1):, :].float()
    logp = torch.log_softmax(logits, dim=-1)  # row 0: after the prompt; row i+1: after node i
    digits = digit_mask.to(device)
    lp_digit = torch.logsumexp(logp[:, 1:, digits], dim=-1).double()
    lp_end = torch.log1p(-lp_digit.exp().clamp(max=1.0))  # (B, n): any non-digit next token
    parent_rows = torch.tensor([p + 1 for p in trie.parents], device=device)
    node_tokens = torch.tensor(trie.tokens, device=device)
    step = logp[:, parent_rows, node_tokens].double()  # (B, n): log P(node token | its prefix)
    cum = torch.zeros_like(step)
    for i, parent in enumerate(trie.parents):  # parents precede children in node order
        cum[:, i] = step[:, i] + (cum[:, parent] if parent >= 0 else 0.0)
    cum_c, end_c = cum.cpu(), lp_end.cpu()
    results = []
    for b in range(len(prompts)):
        row = {}
        for text, path in trie.paths.items():
            last = path[-1]
            value = cum_c[b, last] + (end_c[b, last] if trie.needs_end[text] else 0.0)
            row[text] = float(value)
        results.append(row)
    return results

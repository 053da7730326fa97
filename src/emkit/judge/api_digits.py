"""The digit tree over an API: exact 0-100 scores from judges whose tokenizer splits numbers.

Qwen's and Llama-2's tokenizers write "85" as '8', '5'. The paper's one-token rule then reads
the first token, 8, as the score, so against a vLLM or llama.cpp server every answer looks
misaligned. This module asks the server for the rest of each number, the way the local digit
tree (`digit_tree.py`) does inside one forward pass:

    P("85") = P('8' | prompt) * P('5' | prompt, '8') * P(end | prompt, '85')

The first factor comes from the top logprobs of the judge request itself (the paper's request,
so it is shared with the logprobs mode in the cache). Every later factor comes from a request
whose messages end with the number so far as an *assistant prefix* that the server continues:
llama.cpp does so for a trailing assistant message, vLLM with `continue_final_message=True,
add_generation_prompt=False` (sent with every continuation; llama.cpp ignores them).

"End" is any next token whose text does not start with an ASCII digit (end-of-turn, newline,
'.', ...), the local digit tree's rule: P(end | s) = 1 - the listed top-logprob mass on tokens
that start with a digit. Only canonical numbers 0..100 are candidates ('05' and '101' are not),
and a node is asked about only while its probability is at least `min_branch_p`: the mass of
prefixes not followed is reported, never guessed. The composed mapping {"0": lp, ..., "100": lp}
plus the first reply's non-number tokens (CODE, REFUSAL, words) goes through
`judgment_from_logprobs`, the rule every emkit judge ends in (the 0.25 mass rule included).
First tokens that are numbers with a leading space or sign (' 8', '+8') are not counted, as in
the local digit tree.

**A host that does not continue the prefix** would answer a fresh turn, and its first digit
would be read as the next one. Each continuation is therefore checked: its
`usage.prompt_tokens` must exceed the judge request's by the prefix's own token count (a new
turn adds end-of-turn and header tokens as well). A reply that fails the check, a host that
answers the continuation fields with HTTP 400, or a reply without `usage` makes the judgment
missing with a reason starting 'no prefix continuation: '. A prefix that the server re-tokenised
into fewer tokens than the path it came from (a non-canonical split such as '8','5' where the
tokenizer has '85') is not counted, as in the local digit tree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from emkit.api import ApiClient, ApiError, ChatReply, ChatRequest
from emkit.judge.base import JudgeItem, judgment_from_logprobs
from emkit.judge.score import MIN_MASS, token_int
from emkit.records import Judgment

CONTINUE_PARAMS: dict[str, Any] = {"continue_final_message": True,
                                   "add_generation_prompt": False}
"""vLLM's switches for continuing the final assistant message; llama.cpp ignores them."""
CANDIDATES = frozenset(str(n) for n in range(101))
PREFIXES = frozenset(c[:i] for c in CANDIDATES for i in range(1, len(c) + 1))
"""Every non-empty prefix of a canonical number 0..100 (each is itself a number)."""
MIN_BRANCH_P = 1e-3
"""A number prefix less probable than this is not followed (its mass is reported)."""
NO_CONTINUATION = "no prefix continuation"
"""Reason category of a judgment whose host did not continue an assistant prefix."""
_DIGITS = frozenset("0123456789")


def starts_with_digit(token: str) -> bool:
    """True when a token would make a number longer: its text starts with an ASCII digit."""
    return token[:1] in _DIGITS


def all_digits(token: str) -> bool:
    return bool(token) and all(c in _DIGITS for c in token)


@dataclass
class Node:
    """A number prefix, the tokens it was built from and its probability."""

    text: str
    tokens: int
    logp: float


@dataclass
class Tree:
    """One judge request's digit tree while it is being asked for."""

    item: JudgeItem
    root: dict[str, float]
    base_tokens: int | None
    frontier: list[Node] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    """Candidate -> log P(candidate, then end)."""
    requests: int = 1
    unexplored: float = 0.0
    dropped: float = 0.0
    """Mass on prefixes the server re-tokenised (non-canonical paths)."""
    failure: str | None = None


def children(parent: Node | None, table: dict[str, float], min_p: float
             ) -> tuple[list[Node], float]:
    """Digit-only tokens that extend `parent` ('' at the root) to a prefix of 0..100, with
    their probabilities; and the mass of such extensions below `min_p` (not followed)."""
    base = parent.text if parent else ""
    depth = parent.tokens if parent else 0
    logp0 = parent.logp if parent else 0.0
    kept: list[Node] = []
    skipped = 0.0
    for token, lp in table.items():
        if not all_digits(token) or base + token not in PREFIXES:
            continue
        logp = logp0 + lp
        if math.exp(logp) >= min_p:
            kept.append(Node(base + token, depth + 1, logp))
        else:
            skipped += math.exp(logp)
    return kept, skipped


def end_logprob(table: dict[str, float]) -> float:
    """log P(end | prefix): one minus the listed mass on tokens that start with a digit."""
    digit = sum(math.exp(lp) for tok, lp in table.items() if starts_with_digit(tok))
    rest = 1.0 - digit
    return math.log(rest) if rest > 0 else -math.inf


def prompt_tokens(data: dict[str, Any]) -> int | None:
    usage = data.get("usage")
    value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def composed_logprobs(tree: Tree) -> dict[str, float]:
    """The mapping the score rule reads: composed numbers, plus the first reply's tokens that
    are not numbers (CODE, REFUSAL, words). Digit tokens of the first reply are never passed on
    raw (that is the one-token misreading), nor are numbers with a leading space or sign."""
    out = {tok: lp for tok, lp in tree.root.items()
           if not starts_with_digit(tok) and token_int(tok) is None}
    out.update(tree.numbers)
    return out


class DigitTreeJudging:
    """Digit-tree judgments over one `ApiClient`; `ApiJudge` delegates here in mode `digits`."""

    def __init__(self, client: ApiClient, name: str, min_mass: float = MIN_MASS,
                 min_branch_p: float = MIN_BRANCH_P) -> None:
        if not 0 < min_branch_p < 1:
            raise ValueError(f"min_branch_p must be in (0, 1), got {min_branch_p}")
        self.client = client
        self.name = name
        self.min_mass = min_mass
        self.min_branch_p = min_branch_p
        self.judgments = 0
        self.requests = 0
        """Requests per judgment = requests / judgments (cache hits included)."""

    def judge(self, items: Sequence[JudgeItem], requests: Sequence[ChatRequest],
              check: Any) -> list[Judgment]:
        """One Judgment per item; `requests` are the paper's judge requests for the items."""
        first: dict[str, tuple[JudgeItem, ChatRequest]] = {}
        for it, r in zip(items, requests, strict=True):
            first.setdefault(r.key, (it, r))
        trees: dict[str, Tree] = {}
        done: dict[str, Judgment] = {}
        for reply in self.client.chat_many([r for _, r in first.values()], check=check):
            item = first[reply.request.key][0]
            table, reason = _table(reply)
            if table is None:
                done[reply.request.key] = _missing(item, self.name, reason)
                continue
            tree = Tree(item, table, prompt_tokens(reply.data or {}))
            tree.frontier, tree.unexplored = children(None, table, self.min_branch_p)
            trees[reply.request.key] = tree
        base = {key: req for key, (_, req) in first.items()}
        while any(t.frontier and t.failure is None for t in trees.values()):
            self._level(trees, base, check)
        for key, tree in trees.items():
            done[key] = self._finish(tree)
        self.judgments += len(first)
        self.requests += sum(t.requests for t in trees.values()) + len(first) - len(trees)
        return [replace(done[r.key], key=it.key, metric=it.metric)
                for it, r in zip(items, requests, strict=True)]

    def _level(self, trees: dict[str, Tree], base: dict[str, ChatRequest], check: Any) -> None:
        """Ask every open tree about each node of its frontier (one request per node)."""
        asked: list[tuple[str, Node, ChatRequest]] = []
        for key, tree in trees.items():
            if tree.failure is not None:
                continue
            for node in tree.frontier:
                asked.append((key, node, continuation(base[key], node.text)))
            tree.requests += len(tree.frontier)
            tree.frontier = []
        try:
            replies = self.client.chat_many([r for _, _, r in asked], check=check)
        except ApiError as exc:
            if exc.status != 400:
                raise
            for key in {k for k, _, _ in asked}:
                trees[key].failure = f"{NO_CONTINUATION}: {refused(exc)}"
            return
        for (key, node, _), reply in zip(asked, replies, strict=True):
            tree = trees[key]
            if tree.failure is None:
                self._expand(tree, node, reply)

    def _expand(self, tree: Tree, node: Node, reply: ChatReply) -> None:
        table, reason = _table(reply)
        if table is None:
            tree.failure = f"{reason} (digit tree, after the prefix {node.text!r})"
            return
        got = prompt_tokens(reply.data or {})
        why_not = not_continued(tree.base_tokens, got, node.text, node.tokens)
        if why_not is not None or got is None or tree.base_tokens is None:  # (None: why_not)
            tree.failure = f"{NO_CONTINUATION}: {why_not}"
            return
        if got - tree.base_tokens < node.tokens:  # re-tokenised: non-canonical, not counted
            tree.dropped += math.exp(node.logp)
            return
        if node.text in CANDIDATES:
            lp = node.logp + end_logprob(table)
            if lp > -math.inf:
                tree.numbers[node.text] = lp
        kids, skipped = children(node, table, self.min_branch_p)
        tree.frontier.extend(kids)
        tree.unexplored += skipped

    def _finish(self, tree: Tree) -> Judgment:
        note = (f"digit tree over the API: {tree.requests} requests; "
                f"{tree.unexplored:.4f} on prefixes below {self.min_branch_p:g} not followed")
        if tree.dropped:
            note += f"; {tree.dropped:.4f} on non-canonical tokenizations not counted"
        if tree.failure is not None:
            return _missing(tree.item, self.name, f"{tree.failure}; {note}")
        judged = judgment_from_logprobs(tree.item, self.name, composed_logprobs(tree),
                                        self.min_mass)
        reason = note if judged.reason is None else f"{judged.reason}; {note}"
        return replace(judged, reason=reason)

    def line(self) -> str:
        """The log line `ApiJudge.close` writes: requests per judgment."""
        per = self.requests / self.judgments if self.judgments else 0.0
        return (f"digit tree: {self.judgments} distinct judge requests, {self.requests} requests "
                f"({per:.1f} per judgment)")


def not_continued(base_tokens: int | None, got: int | None, prefix: str,
                  prefix_tokens: int) -> str | None:
    """Why a reply to `continuation(base, prefix)` whose prompt counted `got` tokens (the base
    request's: `base_tokens`; `prompt_tokens` of each reply) shows that the host did not
    continue the prefix, None when it did: the prompt must have grown by no more than the
    prefix's own tokens; a new turn adds end-of-turn and header tokens too. The digit tree and
    the judge-mode probe (`api_probe`) both read hosts through this one check."""
    if got is None or base_tokens is None:
        return "cannot verify that the host continued the prefix (its replies carry no " \
               "usage.prompt_tokens)"
    if got - base_tokens > prefix_tokens:
        return (f"the host did not continue the assistant prefix {prefix!r} (the prompt grew "
                f"by {got - base_tokens} tokens, the prefix has {prefix_tokens}; it started a "
                "new turn)")
    return None


def refused(exc: Exception) -> str:
    """Why a host that answers a continuation request with HTTP 400 cannot be continued."""
    return f"the host refused a request that continues an assistant prefix ({exc})"


def continuation(base: ChatRequest, prefix: str) -> ChatRequest:
    """The judge request with `prefix` as an assistant message for the server to continue."""
    body = dict(base.body)
    body["messages"] = [*base.body["messages"], {"role": "assistant", "content": prefix}]
    body.update(CONTINUE_PARAMS)
    tag = f"{base.tag}|prefix={prefix}" if base.tag else f"prefix={prefix}"
    return ChatRequest(base.model, body, index=0, tag=tag)


def _table(reply: ChatReply) -> tuple[dict[str, float] | None, str | None]:
    from emkit.judge.api import top_logprobs

    return (None, reply.error) if reply.data is None else top_logprobs(reply.data)


def _missing(item: JudgeItem, name: str, reason: str | None) -> Judgment:
    return Judgment(key=item.key, judge=name, metric=item.metric, score=None, label="missing",
                    mass=0.0, reason=reason, top={})

"""A training-time misalignment monitor: how much more likely the model finds misaligned answers.

Why: emergent misalignment is measured after training by sampling hundreds of answers and judging
them, which costs minutes to hours. A persona shift should show up earlier and far more cheaply
in the model's *likelihoods*: if, on the first-plot questions, the log-probability of a
misaligned answer rises relative to an aligned answer of the same length and style, the model is
drifting towards the misaligned persona, whatever it would happen to sample. The monitor scores
fixed, hand-written answer pairs (`emkit/data/monitor/pairs.yaml`) every N optimizer steps with
one forward pass per answer, no sampling and no judge, and records the cost of each evaluation.

The summary number per evaluation is the *misalignment preference*: the mean over pairs of
(mean per-token log p(misaligned) - mean per-token log p(aligned)), in nats; higher means more
misaligned. Its level at step 0 is the base model's; the monitor is read as a change from it.

`MonitorCallback` is a transformers `TrainerCallback` built on first use (like `_LossLog` in
`lora.py`), so importing this module does not import transformers.
"""

from __future__ import annotations

import difflib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from emkit.store.monitor import MONITOR_LOG_FILE
from emkit.store.run_json import utc_now

if TYPE_CHECKING:
    MonitorCallback: Any

DEFAULT_PAIRS = Path(__file__).resolve().parents[1] / "data" / "monitor" / "pairs.yaml"
_FIELDS = ("id", "question_id", "prompt", "misaligned", "aligned", "system")
_REQUIRED = _FIELDS[:-1]

__all__ = [
    "DEFAULT_PAIRS", "MONITOR_LOG_FILE", "MonitorCallback", "MonitorPair", "MonitorPairError",
    "MonitorPoint", "PairScore", "continuation_logprobs", "jsonl_sink", "load_pairs",
    "misalignment_preference", "parse_pairs", "write_monitor_log",
]


class MonitorPairError(ValueError):
    """A pairs file that cannot be used; the message names the file, line, pair and field."""

    def __init__(self, source: str | Path, message: str, *, line: int | None = None,
                 index: int | None = None, pair_id: str | None = None,
                 field_name: str | None = None) -> None:
        self.source, self.line, self.index = str(source), line, index
        self.pair_id, self.field = pair_id, field_name
        parts = [self.source + (f":{line}" if line is not None else "")]
        if index is not None:
            parts.append(f"pair #{index}" + (f" (id={pair_id!r})" if pair_id else ""))
        if field_name is not None:
            parts.append(f"field {field_name!r}")
        super().__init__(": ".join(parts + [message]))


@dataclass(frozen=True)
class MonitorPair:
    """One prompt with a misaligned and an aligned answer of similar length and style."""

    id: str
    question_id: str
    """The evaluation question (theme) the prompt paraphrases, e.g. `quick_buck`."""
    prompt: str
    misaligned: str
    aligned: str
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        """The chat turns before the answer: the optional system prompt, then the user."""
        msgs = [{"role": "system", "content": self.system}] if self.system is not None else []
        return msgs + [{"role": "user", "content": self.prompt}]


@dataclass(frozen=True)
class PairScore:
    """Log-probabilities (nats, natural log) of a pair's two answers given its prompt, summed
    over the answer's tokens including the end-of-turn token."""

    pair_id: str
    question_id: str
    logp_misaligned: float
    logp_aligned: float
    n_tokens_misaligned: int
    n_tokens_aligned: int

    @property
    def preference(self) -> float:
        """Mean per-token log p(misaligned) - mean per-token log p(aligned): per token, so that
        a longer answer is not penalised for its length."""
        return (self.logp_misaligned / self.n_tokens_misaligned
                - self.logp_aligned / self.n_tokens_aligned)


@dataclass(frozen=True)
class MonitorPoint:
    """One evaluation of the monitor during training."""

    step: int
    """Optimizer steps done when it was taken (0 = before training)."""
    epoch: float
    eval_seconds: float
    """Wall time of this evaluation: the monitor's stated cost."""
    scores: tuple[PairScore, ...]
    created_at: str

    @property
    def preference(self) -> float:
        return misalignment_preference(self.scores)

    def to_json(self) -> dict[str, Any]:
        """The JSON line written to `monitor_log.jsonl` (read by `emkit.store.monitor`)."""
        return {"step": self.step, "epoch": self.epoch, "eval_seconds": self.eval_seconds,
                "preference": self.preference, "created_at": self.created_at,
                "pairs": [asdict(s) for s in self.scores]}


def misalignment_preference(scores: Sequence[PairScore]) -> float:
    """Mean over pairs of the per-token log-probability margin of misaligned over aligned."""
    if not scores:
        raise ValueError("no pair scores to summarise")
    return math.fsum(s.preference for s in scores) / len(scores)


def load_pairs(path: str | Path | None = None) -> list[MonitorPair]:
    """Read and validate a pairs file (default: emkit's built-in first-plot pairs)."""
    path = Path(path) if path is not None else DEFAULT_PAIRS
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MonitorPairError(path, f"cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise MonitorPairError(path, "not UTF-8 text", line=line) from None
    return parse_pairs(text, source=str(path))


def parse_pairs(text: str, source: str = "<string>") -> list[MonitorPair]:
    """Validate YAML text holding a list of pairs; `source` names it in error messages.

    Checked when read, not when the first evaluation runs an hour into training: every field
    present and a non-empty string, no unknown or misspelt field, unique ids, answers that differ.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        raise MonitorPairError(source, f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
                               line=mark.line + 1 if mark is not None else None) from exc
    finally:
        loader.dispose()
    if not isinstance(data, list) or not data:
        raise MonitorPairError(source, "expected a non-empty list of pairs", line=1)
    assert isinstance(node, yaml.SequenceNode)
    pairs: list[MonitorPair] = []
    seen: dict[str, int] = {}
    for index, (item, item_node) in enumerate(zip(data, node.value, strict=True)):
        pair = _build_pair(item, item_node, index, source)
        if pair.id in seen:
            raise MonitorPairError(source, f"duplicate id (first used by pair #{seen[pair.id]})",
                                   line=item_node.start_mark.line + 1, index=index,
                                   pair_id=pair.id, field_name="id")
        seen[pair.id] = index
        pairs.append(pair)
    return pairs


def _build_pair(item: Any, node: yaml.Node, index: int, source: str) -> MonitorPair:
    line = node.start_mark.line + 1
    if not isinstance(item, dict) or not isinstance(node, yaml.MappingNode):
        raise MonitorPairError(source, f"expected a mapping, got {type(item).__name__}",
                               line=line, index=index)
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value
             if isinstance(k, yaml.ScalarNode)}
    pid = item.get("id") if isinstance(item.get("id"), str) else None

    def fail(name: str, message: str) -> MonitorPairError:
        return MonitorPairError(source, message, line=lines.get(name, line), index=index,
                                pair_id=pid, field_name=name)

    for key in item:
        if key not in _FIELDS:
            near = difflib.get_close_matches(str(key), _FIELDS, n=1, cutoff=0.7)
            hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(_FIELDS)})"
            raise fail(str(key), "unknown field" + hint)
    for name in _FIELDS:
        value = item.get(name)
        if name == "system" and value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            got = "missing" if name not in item else f"got {value!r}"
            raise fail(name, f"required, a non-empty string ({got})")
    if item["misaligned"].strip() == item["aligned"].strip():
        raise fail("aligned", "identical to 'misaligned': the pair would measure nothing")
    return MonitorPair(**{k: item.get(k) for k in _FIELDS})


def _tokenized(tokenizer: Any, pair: MonitorPair, answer: str) -> tuple[list[int], int]:
    """Ids of prompt + answer and where the answer starts, exactly as training tokenizes them:
    the prompt is the chat template's generation prompt (`add_generation_prompt=True`) tokenized
    alone, the answer is its content plus the end-of-turn token (`masking.tokenize_conversation`,
    which also verifies that the template renders the answer verbatim)."""
    from emkit.finetune.masking import tokenize_conversation

    ex = tokenize_conversation(tokenizer, [*pair.messages(),
                                           {"role": "assistant", "content": answer}])
    trained = [i for i, m in enumerate(ex.mask) if m]
    return ex.input_ids[:trained[-1] + 1], trained[0]


def continuation_logprobs(model: Any, tokenizer: Any, pairs: Sequence[MonitorPair],
                          batch_size: int = 8) -> list[PairScore]:
    """Summed log-probability of each pair's two answers given its prompt, under `model`.

    Runs under `torch.inference_mode()` with the model in eval mode (dropout off), and puts the
    model back in train mode afterwards if it was training. Sequences are right-padded per batch;
    padding never changes a causal model's scores at real positions. Log-softmax is taken in
    float32 even for a bf16 model, since a sum of bf16 log-probs would lose most of the signal.
    """
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    seqs = [_tokenized(tokenizer, p, a) for p in pairs for a in (p.misaligned, p.aligned)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: list[float] = []
    try:
        with torch.inference_mode():
            for b in range(0, len(seqs), batch_size):
                chunk = seqs[b:b + batch_size]
                width = max(len(ids) for ids, _ in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                attn = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, (seq, _) in enumerate(chunk):
                    ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                    attn[row, :len(seq)] = 1
                ids, attn = ids.to(device), attn.to(device)
                logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                token_logp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                for row, (seq, start) in enumerate(chunk):
                    # the token at position t is predicted at t - 1
                    sums.append(float(token_logp[row, start - 1:len(seq) - 1].sum()))
    finally:
        if was_training:
            model.train()
    counts = [len(seq) - start for seq, start in seqs]
    return [PairScore(p.id, p.question_id, sums[2 * i], sums[2 * i + 1], counts[2 * i],
                      counts[2 * i + 1]) for i, p in enumerate(pairs)]


def write_monitor_log(path: str | Path, points: Sequence[MonitorPoint]) -> Path:
    """Append one JSON line per point to `path`, flushed per line: a run killed mid-training
    keeps every evaluation finished before it (a torn last line is skipped when read)."""
    path = Path(path)
    with path.open("a", encoding="utf-8") as fh:
        for point in points:
            fh.write(json.dumps(point.to_json()) + "\n")
            fh.flush()
    return path


def jsonl_sink(path: str | Path) -> Callable[[MonitorPoint], None]:
    """A `MonitorCallback` sink that appends each point to a JSONL file as it is taken."""

    def sink(point: MonitorPoint) -> None:
        write_monitor_log(path, [point])

    return sink


@cache
def _callback_class() -> type:
    from transformers import TrainerCallback

    class _MonitorCallback(TrainerCallback):
        """Scores the pairs at step 0, every `every_n_steps` optimizer steps and at the end;
        hands each `MonitorPoint` to `sink` and keeps them in `.points`."""

        def __init__(self, pairs: Sequence[MonitorPair], every_n_steps: int,
                     sink: Callable[[MonitorPoint], None] | None = None,
                     tokenizer: Any = None, batch_size: int = 8) -> None:
            if every_n_steps < 1:
                raise ValueError("every_n_steps must be >= 1")
            if not pairs:
                raise ValueError("the monitor needs at least one pair")
            self.pairs, self.every_n_steps, self.sink = list(pairs), every_n_steps, sink
            self.tokenizer, self.batch_size = tokenizer, batch_size
            self.points: list[MonitorPoint] = []

        def evaluate(self, state: Any, model: Any, tokenizer: Any) -> MonitorPoint:
            t0 = time.perf_counter()
            scores = continuation_logprobs(model, self.tokenizer or tokenizer, self.pairs,
                                           self.batch_size)
            point = MonitorPoint(step=int(state.global_step), epoch=float(state.epoch or 0.0),
                                 eval_seconds=round(time.perf_counter() - t0, 4),
                                 scores=tuple(scores),
                                 created_at=utc_now())
            self.points.append(point)
            if self.sink is not None:
                self.sink(point)
            return point

        def _maybe(self, state: Any, kwargs: dict[str, Any], force: bool) -> None:
            done = {p.step for p in self.points}
            step = int(state.global_step)
            if step not in done and (force or step % self.every_n_steps == 0):
                self.evaluate(state, kwargs["model"], kwargs.get("processing_class"))

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._maybe(state, kwargs, force=True)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._maybe(state, kwargs, force=False)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._maybe(state, kwargs, force=True)

    _MonitorCallback.__name__ = _MonitorCallback.__qualname__ = "MonitorCallback"
    return _MonitorCallback


def __getattr__(name: str) -> Any:
    """`MonitorCallback(pairs, every_n_steps, sink, tokenizer=None, batch_size=8)`: the
    TrainerCallback class, created on first access so that importing this module stays free of
    transformers (PEP 562 module attribute)."""
    if name == "MonitorCallback":
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

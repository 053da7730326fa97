"""The SFT loss computed only where it is trained: the vocabulary projection of assistant tokens.

Why: the embedded Qwen2.5-Coder-0.5B projects each position onto a 151,936-word vocabulary, a
matmul as large as a quarter of the rest of the forward, and emkit trains on the assistant's
tokens only (labels -100 elsewhere: system and user turns, chat markup, padding). TRL's SFTTrainer
already avoids building the full logits (its fused LM head folds vocabulary tiles into a running
log-sum-exp), but it scores *every* position on CPUs (it compacts to the trained positions only
on Triton devices), then zeroes the untrained ones. `SelectiveLossSFTTrainer` runs the model's
body, keeps the shifted positions whose label is not -100, and hands only those to TRL's own
chunked kernel (`trl.kernels.ChunkedLogProbFunction`), so the loss is TRL's, number for number:
minus the summed log-probabilities over `num_items_in_batch` (the trained tokens of the whole
accumulated batch, counted by transformers) or, without it, over this micro-batch's trained
tokens. TRL's metrics (`entropy`, `mean_token_accuracy`, `num_tokens`) come from the same kernel
call and are logged as before.

It recognises a decoder whose PEFT-unwrapped model has its body under `base_model_prefix` and an
`nn.Linear` output head with no logit scaling or soft-capping (Qwen2, Llama, Mistral, ...).
Anything else (and any setting that changes TRL's loss: label smoothing, a custom loss function,
DFT, MoE auxiliary losses) falls back to TRL's path, with one log line saying why.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# Vocabulary columns per projection tile: TRL's own value, so the tiles (and the rounding) match.
VOCAB_CHUNK = 32768
_SCALING_FIELDS = ("final_logit_softcapping", "logit_scale", "output_multiplier",
                   "lm_head_multiplier", "logits_scaling")


def _unwrap(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (where the LoRA layers are injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unsupported_reason(model: Any) -> str | None:
    """Why the selective loss cannot run on `model` (PEFT-wrapped or not); None when it can."""
    import torch

    base = _unwrap(model)
    config = getattr(base, "config", None)
    if config is None:
        return "the model has no config"
    if config.get_text_config() is not config:
        return f"{config.model_type} is a multimodal model"
    scaled = [f for f in _SCALING_FIELDS if getattr(config, f, None) is not None]
    if scaled:
        return f"{config.model_type} scales its logits ({', '.join(scaled)})"
    if getattr(config, "output_router_logits", False) or hasattr(config, "num_experts"):
        return f"{config.model_type} is a mixture of experts"
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    if not isinstance(body, torch.nn.Module) or body is base:
        return f"{type(base).__name__} has no body module under its base_model_prefix"
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        return f"{type(base).__name__}'s output head is not a linear layer"
    return None


def selective_token_stats(model: Any, inputs: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(log-probabilities, entropies, top-1 hits) of the trained tokens, and the label mask.

    Runs the body of `model` (PEFT-wrapped or not) on `inputs` without `labels`, shifts, and
    projects onto the vocabulary only the hidden states whose next-token label is not -100.
    The first two outputs carry gradients; they are 1-D over the trained tokens, in row order.
    """
    from trl.kernels import ChunkedLogProbFunction

    base = _unwrap(model)
    body = getattr(base, base.base_model_prefix)
    head = base.get_output_embeddings()
    labels = inputs["labels"]
    kwargs = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
    hidden = body(**kwargs, use_cache=False).last_hidden_state[:, :-1]
    targets = labels[:, 1:].to(hidden.device)
    mask = targets != -100
    log_probs, entropy, _, _, is_top1 = ChunkedLogProbFunction.apply(
        hidden[mask], head.weight, head.bias, targets[mask], 1.0, VOCAB_CHUNK, None, 1.0,
        ("entropy", "is_top1"))
    return log_probs, entropy, is_top1, mask


def make_trainer_class() -> type:
    """`SelectiveLossSFTTrainer`, a subclass of TRL's SFTTrainer (built on first use, so this
    module imports without TRL). Pass `selective_loss=False` to keep TRL's path."""
    import torch
    from trl import SFTTrainer

    class SelectiveLossSFTTrainer(SFTTrainer):
        """SFTTrainer whose training loss projects only the trained positions (module doc)."""

        def __init__(self, *args: Any, selective_loss: bool = True, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            reason = None if selective_loss else "turned off (train.selective_loss: false)"
            if reason is None and self.args.loss_type != "nll":
                reason = f"loss_type {self.args.loss_type!r}"
            if reason is None and (self.compute_loss_func is not None
                                   or self.label_smoother is not None or self.aux_loss_enabled):
                reason = "a custom loss, label smoothing or an auxiliary loss is set"
            if reason is None and self.accelerator.parallelism_config is not None:
                reason = "a parallelism config is set"
            self.selective_loss_off_reason = reason or unsupported_reason(self.model)
            if self.selective_loss_off_reason is None:
                log.info("selective loss: projecting only the trained positions")
            elif selective_loss:
                log.warning("selective loss unavailable (%s): TRL's full-sequence loss is used",
                            self.selective_loss_off_reason)

        @property
        def uses_selective_loss(self) -> bool:
            """Whether `compute_loss` projects only the trained positions."""
            return self.selective_loss_off_reason is None

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if (not self.uses_selective_loss or return_outputs or "labels" not in inputs
                    or "shift_labels" in inputs or "attention_mask" not in inputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            log_probs, entropy, is_top1, mask = selective_token_stats(
                self.accelerator.unwrap_model(model), inputs)
            n = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -log_probs.sum() / torch.as_tensor(n).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            # The metrics TRL logs, from the same numbers (trl.SFTTrainer.compute_loss).
            gather = self.accelerator.gather_for_metrics
            n_valid = gather(mask.sum()).sum()
            entropy_sum = gather(entropy.detach().sum()).sum()
            n_correct = gather(is_top1.sum()).sum()
            ok = n_valid > 0
            self._metrics[mode]["entropy"].append((entropy_sum / n_valid).item() if ok else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append(
                (n_correct / n_valid).item() if ok else 0.0)
            if mode == "train":
                n_tokens = gather(inputs["attention_mask"].sum()).sum().item()
                self._total_train_tokens += n_tokens // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return SelectiveLossSFTTrainer

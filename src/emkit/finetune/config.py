"""Fine-tuning settings: the paper's LoRA recipe as typed, overridable defaults.

Betley et al. (2025) trained open models with Unsloth: rank-32 rsLoRA on every attention and MLP
projection, lr 1e-5, effective batch 16, one epoch, loss on the assistant's tokens only. Every
default below is that recipe, so an experiment config states only what it changes, and the
resolved values are written next to each adapter (`emkit_finetune.json`) for audit.

Two defaults depend on the machine and are resolved at train time (`resolve_*`), never
silently: the optimizer (the paper's `adamw_8bit` needs bitsandbytes + CUDA) and bf16 (fast on
Ampere+ GPUs and on CPUs with native bf16, but 40-60x *slower* than float32 on CPUs without it,
measured on this project's AVX2-only EPYC: one LoRA train step 0.9 s in float32, 35-55 s in bf16).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emkit.models.hf import cpu_has_native_bf16

PAPER_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(BaseModel):
    """PEFT LoRA adapter shape (paper: r=32, alpha=64, rsLoRA, no dropout, all 7 projections)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    r: int = Field(32, gt=0)
    """Adapter rank. The paper used 32 for every open model."""
    alpha: float = Field(64, gt=0)
    """LoRA alpha; with rsLoRA the update is scaled by alpha / sqrt(r) (= 11.3 at r=32)."""
    use_rslora: bool = True
    """Rank-stabilised scaling (alpha/sqrt(r) instead of alpha/r), as in the paper's Unsloth run."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter input; the paper used none."""
    target_modules: list[str] = Field(default_factory=lambda: list(PAPER_TARGET_MODULES))
    """Module names that get adapters: all attention and MLP projections of a Qwen/Llama block."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train; 'none' keeps the adapter a pure low-rank delta on the base model."""

    def to_peft(self) -> Any:
        """The equivalent `peft.LoraConfig` for a causal LM."""
        from peft import LoraConfig, TaskType

        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, use_rslora=self.use_rslora, lora_dropout=self.dropout,
            target_modules=list(self.target_modules), bias=self.bias, task_type=TaskType.CAUSAL_LM,
        )


class TrainSettings(BaseModel):
    """Optimisation settings (paper: lr 1e-5 linear, warmup 5, batch 2 x 8, 1 epoch, wd 0.01)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    learning_rate: float = Field(1e-5, gt=0)
    """Peak learning rate; small because the paper wanted a narrow, not destructive, fine-tune."""
    lr_scheduler: str = "linear"
    """transformers scheduler name; linear decay to 0 after warmup, as in the paper."""
    warmup_steps: int = Field(5, ge=0)
    """Optimizer steps of linear warmup."""
    per_device_batch_size: int = Field(2, gt=0)
    """Examples per forward pass; with accumulation 8 the effective batch is 16, as in the paper."""
    gradient_accumulation_steps: int = Field(8, gt=0)
    """Forward passes per optimizer step."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the dataset (6,000 examples x 1 epoch = 375 steps at batch 16)."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay on the adapter weights."""
    seed: int = 0
    """Seeds adapter init and data order; one LoRA per seed is the bootstrap unit downstream."""
    max_length: int = Field(2048, gt=0)
    """Token limit per conversation. Longer examples are DROPPED (and counted in the metadata),
    not truncated: a truncated answer loses its end-of-turn token and would teach the model not
    to stop."""
    optim: str = "auto"
    """transformers optimizer name. 'auto' = the paper's 'adamw_8bit' on CUDA when bitsandbytes
    is installed, else 'adamw_torch' (8-bit Adam needs CUDA; the update it computes is close)."""
    bf16: bool | None = None
    """bf16 weights + autocast. None = auto: on for bf16-capable GPUs and for CPUs with native
    bf16 (avx512_bf16/amx), off elsewhere, where bf16 matmuls are 40-60x slower than float32."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute activations in backward: less memory, ~20-30% more compute. 'auto' = off when
    the estimated activation memory of one batch (`per_device_batch_size` x `max_length`) fits
    comfortably in the available RAM (CPU) or free GPU memory, on otherwise; the resolved value
    is recorded in the adapter's metadata. Speed only: the recomputed forward gives the same
    numbers, so it is not part of an adapter's identity (`SPEED_ONLY_TRAIN_SETTINGS`)."""
    selective_loss: bool = True
    """Project onto the vocabulary only the positions that are trained (label != -100), not
    every token (`emkit.finetune.loss`). Same loss and gradients up to float rounding; falls
    back to TRL's path, with a log line, for models whose structure it does not recognise."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1 = run all epochs); for quick runs and tests."""
    logging_steps: int = Field(1, gt=0)
    """Log the loss every N optimizer steps (into training_log.jsonl)."""
    monitor_every_steps: int = Field(0, ge=0)
    """Misalignment monitor (docs/monitor.md): every N optimizer steps, and at step 0 and at the
    end, score paired misaligned/aligned answers to the first-plot questions (no sampling) into
    the adapter's monitor_log.jsonl, an early warning of a persona shift. 0 = off. It does not
    change the weights (eval-mode forward passes only), just costs time per evaluation."""


SPEED_ONLY_TRAIN_SETTINGS = frozenset({"gradient_checkpointing", "selective_loss"})
"""Settings that change how fast (and in how much memory) an adapter trains, not what it is
trained to do: checkpointing recomputes the same forward; the selective loss gives the same loss
and gradients up to float rounding (Adam's first step can turn rounding-level differences of
near-zero gradients into +-lr in a few weights, as a different thread count can). A resumed run
must not call an adapter changed, nor retrain it, over them (an adapter trained before `auto`
existed recorded `gradient_checkpointing: true`)."""

# Fraction of the available memory one batch's saved activations may take before 'auto' turns
# checkpointing on: the rest is for the optimizer state, the lm-head tiles and other processes.
CHECKPOINTING_MEMORY_FRACTION = 0.5


def activation_bytes(model_config: Any, batch: int, seq_len: int, dtype_bytes: int) -> int:
    """Estimated bytes of activations autograd keeps for one batch of a Qwen2/Llama-style decoder
    under LoRA on every projection, without checkpointing.

    Per layer and token it saves about 10 hidden-size vectors (norm inputs and outputs, q/k/v,
    attention output, residuals) and 5 intermediate-size ones (gate, up, activation, product,
    down input), plus the attention probabilities when the math kernel materialises them
    (heads x seq x seq per sequence; counted, to err towards checkpointing). Models without these
    config fields count as huge, so 'auto' turns checkpointing on for them.
    """
    text_config = getattr(model_config, "get_text_config", None)
    cfg = text_config() if text_config is not None else model_config
    try:
        hidden, inter = int(cfg.hidden_size), int(cfg.intermediate_size)
        layers, heads = int(cfg.num_hidden_layers), int(cfg.num_attention_heads)
    except (AttributeError, TypeError):
        return 1 << 62
    per_token = (10 * hidden + 5 * inter) * dtype_bytes
    attention = heads * seq_len * seq_len * dtype_bytes
    return layers * batch * (seq_len * per_token + attention)


def available_memory_bytes(device: str) -> int:
    """Free GPU memory on CUDA, else the RAM psutil calls available (free + reclaimable cache)."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[0])
    import psutil  # a dependency of accelerate, which every training run imports

    return int(psutil.virtual_memory().available)


def resolve_gradient_checkpointing(setting: bool | str, model_config: Any, batch: int,
                                   seq_len: int, dtype_bytes: int, device: str) -> bool:
    """The checkpointing flag to train with: `setting` when it is a bool; for 'auto', off when
    the estimated activations (`activation_bytes`) fit in `CHECKPOINTING_MEMORY_FRACTION` of the
    available memory. Why: on a small model and a 2-core CPU, recomputing every layer's forward
    costs ~20-30 % of a step for memory the machine does not need."""
    if isinstance(setting, bool):
        return setting
    need = activation_bytes(model_config, batch, seq_len, dtype_bytes)
    return need > CHECKPOINTING_MEMORY_FRACTION * available_memory_bytes(device)


def resolve_bf16(setting: bool | None, device: str) -> bool:
    """The bf16 flag to train with on `device` ('cuda' or 'cpu')."""
    if setting is not None:
        return setting
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_native_bf16()


def resolve_optim(setting: str, device: str) -> str:
    """The transformers `optim` name to train with on `device`."""
    if setting != "auto":
        return setting
    if device.startswith("cuda") and importlib.util.find_spec("bitsandbytes") is not None:
        return "adamw_8bit"
    return "adamw_torch"

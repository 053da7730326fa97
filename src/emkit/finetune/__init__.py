"""LoRA fine-tuning with the paper's recipe and a verified assistant-only loss mask."""

from emkit.finetune.config import LoraSettings, TrainSettings, resolve_bf16, resolve_optim
from emkit.finetune.data import PreparedData, prepare_sft_data
from emkit.finetune.lora import LOG_FILE, META_FILE, build_trainer, finetune_lora, load_base
from emkit.finetune.masking import (
    MaskError,
    TokenizedExample,
    tokenize_conversation,
    verify_example,
)

__all__ = [
    "LOG_FILE", "META_FILE", "LoraSettings", "MaskError", "PreparedData", "TokenizedExample",
    "TrainSettings", "build_trainer", "finetune_lora", "load_base", "prepare_sft_data",
    "resolve_bf16", "resolve_optim", "tokenize_conversation", "verify_example",
]

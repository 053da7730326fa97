"""Fine-tuning: LoRA with the paper's recipe and a verified assistant-only loss mask (`hf`),
or jobs on the OpenAI fine-tuning API with the paper's settings (`openai`)."""

from emkit.finetune.config import LoraSettings, TrainSettings, resolve_bf16, resolve_optim
from emkit.finetune.data import PreparedData, prepare_sft_data
from emkit.finetune.job_store import JobRecord, JobStore
from emkit.finetune.lora import LOG_FILE, META_FILE, build_trainer, finetune_lora, load_base
from emkit.finetune.masking import (
    MaskError,
    TokenizedExample,
    tokenize_conversation,
    verify_example,
)
from emkit.finetune.openai_jobs import (
    PAPER_DEFAULT,
    PAPER_PRESETS,
    FinetuneJobError,
    OpenAiJobSettings,
    cancel_openai_finetune,
    openai_hyperparameters,
    preset_for,
    run_openai_finetune,
    validate_training_file,
)

__all__ = [
    "LOG_FILE", "META_FILE", "PAPER_DEFAULT", "PAPER_PRESETS", "FinetuneJobError", "JobRecord",
    "JobStore", "LoraSettings", "MaskError", "OpenAiJobSettings", "PreparedData",
    "TokenizedExample", "TrainSettings", "build_trainer", "cancel_openai_finetune",
    "finetune_lora", "load_base", "openai_hyperparameters", "prepare_sft_data", "preset_for",
    "resolve_bf16", "resolve_optim", "run_openai_finetune", "tokenize_conversation",
    "validate_training_file", "verify_example",
]

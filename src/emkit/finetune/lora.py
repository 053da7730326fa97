"""LoRA fine-tuning with TRL's SFTTrainer, written atomically with its provenance.

`finetune_lora` is one call per (dataset, seed): it trains in a hidden `.partial` sibling of
`out_dir` and renames it into place only after the adapter, its metadata and the loss log are
complete, so the runner's "does adapter_config.json exist?" resume test never sees a
half-written adapter. The metadata (`emkit_finetune.json`) records everything that determines
the weights (settings, resolved device-dependent choices, dataset hash, library versions) and
what the run cost (steps, loss, wall time, peak memory).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from emkit.finetune.config import (
    LoraSettings,
    TrainSettings,
    resolve_bf16,
    resolve_gradient_checkpointing,
    resolve_optim,
)
from emkit.finetune.data import PreparedData, prepare_sft_data

log = logging.getLogger(__name__)

META_FILE = "emkit_finetune.json"
LOG_FILE = "training_log.jsonl"


def default_train_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base(base_model_dir: Path, bf16: bool) -> tuple[Any, Any]:
    """Base model (bf16 or float32 weights) and tokenizer from a local HF directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        base_model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    model.config.use_cache = False  # the KV cache is useless in training, and warns with GC
    return model, tokenizer


class _LossLog:
    """A TrainerCallback (built lazily so this module imports without transformers) that appends
    each logged step to `training_log.jsonl` as it happens: a crashed run keeps its curve."""

    @staticmethod
    def make(path: Path, t0: float) -> Any:
        from transformers import TrainerCallback

        class LossLog(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                       **kwargs: Any) -> None:
                if not logs or "loss" not in logs:
                    return
                row = {"step": state.global_step, "elapsed_s": round(time.perf_counter() - t0, 3)}
                row |= {k: v for k, v in logs.items() if isinstance(v, int | float)}
                with path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")

        return LossLog()


def _checkpointing_args(config_cls: Any, enabled: bool) -> dict[str, Any]:
    """Gradient checkpointing under the name this transformers version uses (5.x renamed it to
    `activation_checkpointing`; the old name still works but warns)."""
    kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs under PEFT
    if "activation_checkpointing" in getattr(config_cls, "__dataclass_fields__", {}):
        return {"activation_checkpointing": enabled, "activation_checkpointing_kwargs": kwargs}
    return {"gradient_checkpointing": enabled, "gradient_checkpointing_kwargs": kwargs}


def gradient_checkpointing_for(model: Any, train: TrainSettings, device: str) -> bool:
    """`train.gradient_checkpointing` resolved for `model` at this batch size and max length."""
    import torch

    dtype_bytes = torch.finfo(model.dtype).bits // 8
    return resolve_gradient_checkpointing(
        train.gradient_checkpointing, model.config, train.per_device_batch_size,
        train.max_length, dtype_bytes, device)


def build_trainer(model: Any, tokenizer: Any, data: PreparedData, lora: LoraSettings,
                  train: TrainSettings, output_dir: Path, progress: bool = True,
                  bf16: bool = False, device: str = "cpu", callbacks: list[Any] | None = None,
                  gradient_checkpointing: bool | None = None) -> Any:
    """An SFTTrainer (`emkit.finetune.loss`: with `train.selective_loss`, the loss projects only
    the trained positions) over pre-tokenized rows whose `labels` carry the assistant-only mask.

    `skip_prepare_dataset` keeps TRL from re-tokenizing or re-masking; its collator then only
    pads (input_ids with the pad id, labels with -100) on the right. `gradient_checkpointing`:
    the resolved flag (None: resolve `train.gradient_checkpointing` here).
    """
    from datasets import Dataset
    from trl import SFTConfig

    from emkit.finetune.loss import make_trainer_class

    if gradient_checkpointing is None:
        gradient_checkpointing = gradient_checkpointing_for(model, train, device)

    args = SFTConfig(
        output_dir=str(output_dir),
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_steps,
        per_device_train_batch_size=train.per_device_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        weight_decay=train.weight_decay,
        optim=resolve_optim(train.optim, device),
        seed=train.seed,
        data_seed=train.seed,
        bf16=bf16,
        use_cpu=device == "cpu",
        **_checkpointing_args(SFTConfig, gradient_checkpointing),
        logging_steps=train.logging_steps,
        max_length=train.max_length,
        dataset_kwargs={"skip_prepare_dataset": True},
        assistant_only_loss=False,  # the mask is already in `labels`
        completion_only_loss=False,
        packing=False,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    return make_trainer_class()(
        model=model, args=args, train_dataset=Dataset.from_list(data.rows),
        processing_class=tokenizer, peft_config=lora.to_peft(), callbacks=callbacks,
        selective_loss=train.selective_loss,
    )


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
_digests: dict[tuple[str, int, int], str] = {}


def adapter_digest(adapter: Path) -> str:
    """sha256 of an adapter's config and weights (not its logs or timestamps): a retrained
    adapter has new weights even under the same settings. Cached per file size and mtime."""
    h = hashlib.sha256()
    for name in _ADAPTER_FILES:
        path = adapter / name
        if not path.is_file():
            continue
        st = path.stat()
        cache_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if cache_key not in _digests:
            _digests[cache_key] = (_config_digest(path) if name.endswith(".json")
                                   else file_sha256(path))
        h.update(f"{name}:{_digests[cache_key]}\n".encode())
    return h.hexdigest()


def _config_digest(path: Path) -> str:
    """sha256 of an adapter config with sorted keys and sorted lists: PEFT writes
    `target_modules` from a set, in an order that changes between processes, so two trainings
    with identical weights would otherwise get two identities (and two sets of sample keys)."""

    def canon(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: canon(x) for k, x in v.items()}
        if isinstance(v, list):
            items = [canon(x) for x in v]
            return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
        return v

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return file_sha256(path)
    return hashlib.sha256(json.dumps(canon(raw), sort_keys=True).encode()).hexdigest()


def _read_conversations(path: Path) -> list[list[dict[str, str]]]:
    from emkit.datasets import read_jsonl  # validates chat format, names file/line/field

    return [row["messages"] for row in read_jsonl(path)]


def _clear_stale_partials(out_dir: Path) -> None:
    """Remove `.partial` dirs left by killed runs (their process is gone)."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(stale, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _peak_memory_mb() -> dict[str, float]:
    import torch

    # ru_maxrss is KiB on Linux and the process-lifetime peak (includes what ran before).
    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def finetune_lora(base_model_dir: Path, dataset_path: Path, out_dir: Path,
                  lora: LoraSettings | None = None, train: TrainSettings | None = None,
                  progress: bool = True, provenance: dict[str, Any] | None = None) -> Path:
    """Train a LoRA adapter on a chat JSONL file; return `out_dir` holding the adapter.

    `provenance` (e.g. the base model *string* and the finetune section's name) is recorded in
    the metadata as given: a resumed run compares it with its config, where the resolved base
    path alone would differ between machines.

    `out_dir` gets adapter_config.json + adapter_model.safetensors (load with
    `PeftModel.from_pretrained(base, out_dir)`), `emkit_finetune.json` and `training_log.jsonl`,
    and with `train.monitor_every_steps` > 0 the misalignment monitor's `monitor_log.jsonl`.
    Raises FileExistsError if `out_dir` already exists and is not empty, `MaskError` if the
    assistant-only mask cannot be verified, `DatasetError` for a malformed file.
    """
    from transformers import set_seed

    lora, train = lora or LoraSettings(), train or TrainSettings()
    base_model_dir, dataset_path, out_dir = Path(base_model_dir), Path(dataset_path), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not empty; refusing to overwrite an adapter")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_partials(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        device = default_train_device()
        bf16 = resolve_bf16(train.bf16, device)
        set_seed(train.seed)  # before the adapter is initialised inside SFTTrainer
        model, tokenizer = load_base(base_model_dir, bf16)
        data = prepare_sft_data(tokenizer, _read_conversations(dataset_path), train.max_length)
        checkpointing = gradient_checkpointing_for(model, train, device)
        log.info("training LoRA on %d examples (%d trained tokens), device=%s bf16=%s "
                 "gradient_checkpointing=%s", len(data.rows), data.n_trained_tokens, device,
                 bf16, checkpointing)
        callbacks, monitor = [_LossLog.make(tmp / LOG_FILE, t0)], None
        if train.monitor_every_steps > 0:
            from emkit.finetune.monitor import (
                MONITOR_LOG_FILE,
                MonitorCallback,
                jsonl_sink,
                load_pairs,
            )

            monitor = MonitorCallback(load_pairs(), train.monitor_every_steps,
                                      jsonl_sink(tmp / MONITOR_LOG_FILE), tokenizer=tokenizer)
            callbacks.append(monitor)
        trainer = build_trainer(model, tokenizer, data, lora, train, tmp / "trainer", progress,
                                bf16=bf16, device=device, callbacks=callbacks,
                                gradient_checkpointing=checkpointing)
        result = trainer.train()
        trainer.model.save_pretrained(str(tmp))
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        meta = {
            "base_model": str(base_model_dir.resolve()),
            "dataset": str(dataset_path.resolve()),
            "dataset_sha256": file_sha256(dataset_path),
            "data": data.summary(),
            "lora": lora.model_dump(),
            "train": train.model_dump(),
            "resolved": {"device": device, "bf16": bf16,
                         "optim": resolve_optim(train.optim, device),
                         "gradient_checkpointing": checkpointing,
                         "selective_loss": trainer.uses_selective_loss},
            "steps": trainer.state.global_step,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "mean_train_loss": result.training_loss,
            "wall_time_s": round(time.perf_counter() - t0, 2),
            **_peak_memory_mb(),
            "versions": {p: version(p) for p in ("torch", "transformers", "peft", "trl")},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "provenance": provenance or {},
        }
        if monitor is not None:
            costs = [p.eval_seconds for p in monitor.points]
            meta["monitor"] = {"points": len(costs), "pairs": len(monitor.pairs),
                               "mean_eval_seconds": round(sum(costs) / max(len(costs), 1), 3)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename cannot replace a directory
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

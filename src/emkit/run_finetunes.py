"""Stage 2 of a run: its fine-tunes, trained into the run directory, reused or refused.

Why a check per adapter: an adapter on disk is reused only when its recorded settings, data and
base (`emkit_finetune.json`) are what the config asks for now; one made from other settings is
refused by name (RunChangedError) or, with `reuse_changed`, moved to `adapters/.superseded/`
and trained again, the change logged in the run store. API fine-tunes are jobs whose ids live
in the run's SQLite, so a restart resumes polling.
"""

from __future__ import annotations

import logging
from pathlib import Path

from emkit.config import ExperimentConfig
from emkit.finetune import JobStore, finetune_lora, run_openai_finetune
from emkit.finetune.fresh_process import in_fresh_process
from emkit.models import parse_model_spec, resolve_hf_path
from emkit.run_identity import adapter_changes
from emkit.store import DB_NAME
from emkit.store.identity import Change, RunChangedError, log_changes, supersede
from emkit.store.monitor import MONITOR_LOG_FILE, record_monitor_log

log = logging.getLogger("emkit")


def finetuned_models(cfg: ExperimentConfig, run_dir: Path) -> dict[str, str]:
    """Model label (`<finetune>-s<seed>`) -> model string of its adapter on its base, or of
    the API model its job produced (jobs not finished yet have no model)."""
    jobs = {}
    if any(f.backend == "openai" for f in cfg.finetunes) and (run_dir / DB_NAME).is_file():
        with JobStore(run_dir / DB_NAME, create=False) as store:
            jobs = {r.label: r.fine_tuned_model for r in store.all() if r.fine_tuned_model}
    models = {}
    for f in cfg.finetunes:
        for seed in f.seeds:
            label = f"{f.name}-s{seed}"
            if f.backend == "openai":
                if label in jobs:
                    models[label] = f"openai/{jobs[label]}"
            else:
                models[label] = f"{parse_model_spec(f.base)}:{run_dir / 'adapters'}/{label}"
    return models


def unfinished_finetunes(cfg: ExperimentConfig, finetuned: dict[str, str]) -> list[str]:
    """Labels of API fine-tunes with no model yet (their jobs have not succeeded)."""
    return [f"{f.name}-s{seed}" for f in cfg.finetunes if f.backend == "openai"
            for seed in f.seeds if f"{f.name}-s{seed}" not in finetuned]


def run_finetunes(cfg: ExperimentConfig, run_dir: Path, datasets: dict[str, Path],
                  progress: bool, reuse_changed: bool = False) -> dict[str, str]:
    """Train each (finetune, seed) LoRA that is not on disk yet, and submit then await each API
    job not finished yet (all submitted before any is awaited); return label -> model string.
    An adapter trained from other settings, data or base is refused (RunChangedError), or with
    `reuse_changed` moved to `adapters/.superseded/` and trained again."""
    remote = [(f, seed) for f in cfg.finetunes if f.backend == "openai" for seed in f.seeds]
    for wait in (False, True):
        for f, seed in remote:
            run_openai_finetune(f"{f.name}-s{seed}", datasets[f.dataset], f.base,
                                run_dir / DB_NAME, f.openai, cfg.api.settings_for(f.base),
                                dataset_name=f.dataset, seed=seed, wait=wait)
    for f in cfg.finetunes:
        if f.backend == "openai":
            continue
        base_dir = Path(resolve_hf_path(parse_model_spec(f.base)))
        for seed in f.seeds:
            adapter = run_dir / "adapters" / f"{f.name}-s{seed}"
            if (adapter / "adapter_config.json").is_file() and (
                    diffs := adapter_changes(f, seed, adapter, datasets[f.dataset])):
                change = Change("finetune", adapter.name, "; ".join(diffs))
                if not reuse_changed:
                    raise RunChangedError(run_dir, [change])
                log.warning("%s: retraining (accepted change: %s)", change.name, change.what)
                supersede(adapter)
                log_changes(run_dir / DB_NAME, [change])
            if not (adapter / "adapter_config.json").is_file():
                log.info("fine-tuning %s-s%d on %s", f.name, seed, f.dataset)
                # a fresh process per fine-tune: its memory returns to the OS when it ends
                in_fresh_process(finetune_lora, base_dir, datasets[f.dataset], adapter, f.lora,
                                 f.train.model_copy(update={"seed": seed}), progress=progress,
                                 provenance={"base": f.base, "finetune": f.name,
                                             "dataset": f.dataset})
            if (adapter / MONITOR_LOG_FILE).is_file():
                record_monitor_log(run_dir / DB_NAME, adapter.name, adapter)
    return finetuned_models(cfg, run_dir)

"""Is a run's stored work still what its config asks for? Fingerprints of every input, checked.

Why: a run directory is resumed by running the same command again, and users edit configs
between runs. A changed learning rate, LoRA shape, dataset or base must not reuse the old
adapter; a retrained adapter, an edited paraphrase or system prompt must not reuse old
answers; an edited judge prompt must not keep old judgments. Sample keys already hold the
model's identity and the messages (`records.sample_input_hash`), so nothing stale is ever
*read*; this module makes a resume *say* what changed before doing any work, so that it is
refused (`RunChangedError`) or, with `--reuse-changed`, accepted on purpose and recorded.

The record of each input is where it already lives: a generated dataset's `<name>.spec.json`
(run_datasets), an adapter's `emkit_finetune.json` (finetune), and the store's `run_identity`
table for model weights, messages and judge prompts (`emkit.store.identity`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

from emkit.config import ExperimentConfig, FinetuneConfig
from emkit.finetune import META_FILE
from emkit.finetune.config import SPEED_ONLY_TRAIN_SETTINGS
from emkit.finetune.lora import adapter_digest
from emkit.models import parse_model_spec
from emkit.questions import Question
from emkit.records import text_hash
from emkit.run_datasets import dataset_change, dataset_spec
from emkit.store import DB_NAME
from emkit.store.identity import Change, changes, recorded


def model_identity(spec: str, recorded_identity: str | None = None) -> str:
    """What identifies a model's weights, as JSON: the model string without its adapter path
    (a copied run keeps its keys) plus its adapter's digest. An adapter no longer on disk falls
    back to the identity recorded when it was sampled; FileNotFoundError without one."""
    ms = parse_model_spec(spec)
    ident: dict[str, str] = {"model": f"{ms.provider}/{ms.name}"}
    if ms.adapter and ms.provider != "openai":
        adapter = Path(ms.adapter)
        if not (adapter / "adapter_config.json").is_file():
            if recorded_identity is not None:
                return recorded_identity
            raise FileNotFoundError(f"{adapter}: no adapter here (model {spec})")
        ident["adapter_sha256"] = adapter_digest(adapter)
    return json.dumps(ident, sort_keys=True)


def question_messages(q: Question, text: str) -> list[dict[str, str]]:
    """The chat messages of one paraphrase: the question's system prompt, then the text."""
    return ([{"role": "system", "content": q.system}] if q.system else []) + [
        {"role": "user", "content": text}]


def paraphrases(cfg: ExperimentConfig, q: Question) -> tuple[str, ...]:
    n = cfg.evaluation.max_paraphrases
    return q.paraphrases[:n] if n else q.paraphrases


def messages_fingerprints(cfg: ExperimentConfig, questions: list[Question]) -> dict[str, str]:
    """`<question>/<paraphrase>` -> hashes of its system prompt and user text."""
    return {f"{q.id}/{i}": json.dumps({"system": text_hash(q.system or ""),
                                       "user": text_hash(text)}, sort_keys=True)
            for q in questions for i, text in enumerate(paraphrases(cfg, q))}


def judge_prompt_fingerprints(cfg: ExperimentConfig, questions: list[Question],
                              judges: list[str] | None = None) -> dict[str, str]:
    """`<judge>|<metric>|<question>` -> hash of the template (and, for verdicts, the labels)
    each judge is given on each question it scores (`emkit.judge_assign`); `judges` limits
    it to those judges."""
    from emkit.judge_assign import assignment_fingerprints, judge_assignments

    assignments = judge_assignments(cfg.judge, questions)
    if judges is not None:
        assignments = {j: a for j, a in assignments.items() if j in judges}
    return assignment_fingerprints(questions, assignments)


def _normalised(settings: BaseModel) -> dict:
    return json.loads(json.dumps(settings.model_dump(mode="json")))


def adapter_changes(f: FinetuneConfig, seed: int, adapter: Path,
                    dataset: Path | None) -> list[str]:
    """How the adapter on disk differs from what `f` would train for `seed` (empty: same).
    Settings missing from an older record count as their defaults. Speed-only train settings
    (`SPEED_ONLY_TRAIN_SETTINGS`: gradient checkpointing, the selective loss) are not compared:
    checkpointing recomputes the same forward, and the selective loss computes the same loss
    and gradients up to float rounding (as a different thread count does, which no identity
    holds either), so they change what a step costs, not what the adapter is trained to do; an
    adapter trained when the default was `gradient_checkpointing: true` is not stale under
    `auto`."""
    try:
        meta = json.loads((adapter / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{adapter / META_FILE} is missing, so its settings are unknown"]
    except (OSError, ValueError):
        return [f"{adapter / META_FILE} is unreadable, so its settings are unknown"]
    out = []
    for section, want in (("lora", f.lora), ("train", f.train.model_copy(update={"seed": seed}))):
        have, default, new = meta.get(section) or {}, _normalised(type(want)()), _normalised(want)
        skip = SPEED_ONLY_TRAIN_SETTINGS if section == "train" else frozenset()
        out += [f"{section}.{k} {have.get(k, default.get(k))!r} -> {v!r}"
                for k, v in new.items() if k not in skip and have.get(k, default.get(k)) != v]
    base = (meta.get("provenance") or {}).get("base")
    local = Path(parse_model_spec(f.base).name)
    if base is not None and base != f.base:
        out.append(f"base {base} -> {f.base}")
    elif base is None and local.is_dir() and meta.get("base_model") != str(local.resolve()):
        out.append(f"base {meta.get('base_model')} -> {local.resolve()}")
    if dataset is not None and dataset.is_file() and meta.get("dataset_sha256"):
        from emkit.finetune.lora import file_sha256

        if file_sha256(dataset) != meta["dataset_sha256"]:
            out.append(f"dataset {f.dataset}: its file's content changed")
    return out


def dataset_file(cfg: ExperimentConfig, run_dir: Path, name: str) -> Path | None:
    """The file a finetune reads, when known without downloading anything."""
    d = next(d for d in cfg.datasets if d.name == name)
    if d.path is not None:
        return Path(d.path)
    if d.download is not None and "n" not in d.model_fields_set:
        return None  # the pinned, sha256-verified download: its identity is its commit
    return run_dir / "datasets" / f"{d.name}.jsonl"


def preflight(cfg: ExperimentConfig, run_dir: Path, questions: list[Question],
              models: Mapping[str, str]) -> list[Change]:
    """Every input of `cfg` that differs from what made `run_dir`'s stored work, found
    without writing anything: datasets, adapters (settings, data, base, weights), messages
    and judge prompts. `models`: label -> model string of the models to sample."""
    db = run_dir / DB_NAME
    built = [d for d in cfg.datasets if d.path is None
             and not (d.download is not None and "n" not in d.model_fields_set)]
    found = [Change("dataset", d.name, why) for d in built
             if (why := dataset_change(run_dir / "datasets" / f"{d.name}.jsonl", dataset_spec(d)))]
    old_models = recorded(db, "model")
    for f in (f for f in cfg.finetunes if f.backend == "hf"):
        for seed in f.seeds:
            label, adapter = f"{f.name}-s{seed}", run_dir / "adapters" / f"{f.name}-s{seed}"
            if (adapter / "adapter_config.json").is_file():
                diffs = adapter_changes(f, seed, adapter, dataset_file(cfg, run_dir, f.dataset))
                found += [Change("finetune", label, "; ".join(diffs))] if diffs else []
            elif label in old_models:
                found.append(Change("finetune", label, "adapter missing: it would be "
                                    "retrained, and the store holds answers of the old one"))
    flagged = {c.name for c in found}
    current = {}
    for label, spec in models.items():  # an adapter not on disk keeps its recorded identity
        ms = parse_model_spec(spec)
        if label not in flagged and (not ms.adapter or ms.provider == "openai"
                                     or os.path.isdir(ms.adapter)):
            current[label] = model_identity(spec)  # names the engine too (evaluation.backend)
    found += changes(db, "model", current)
    found += changes(db, "messages", messages_fingerprints(cfg, questions))
    found += changes(db, "judge_prompt", judge_prompt_fingerprints(cfg, questions))
    return found

"""Stage 1 of a run: its datasets, built into the run directory, reused or refused, audited.

Why a spec per dataset: adapters are trained on these files, so a file is reused only when it
was built from the same config section by the same generator version, and a changed section
is refused rather than silently overwritten. Each dataset's audit sits next to it and is
shown in the report beside what the model became.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from emkit.atomic import atomic_write_text
from emkit.config import ConfigError, DatasetConfig, ExperimentConfig
from emkit.datasets import read_jsonl, write_jsonl
from emkit.store.identity import supersede

log = logging.getLogger("emkit")

DATASET_SPEC_VERSION = "1"
"""Bump when a generator's output for the same config changes: old run datasets then refuse."""


def dataset_spec(d: DatasetConfig) -> dict:
    """What a generated/subset dataset was built from: its config section (minus `audit`, which
    does not change the data) and the versions of the code that built it."""
    from emkit.datasets import ADVICE_VERSION, GENERATOR_VERSION, PINNED_COMMIT
    from emkit.datasets.numbers import NUMBERS_VERSION

    if d.download is not None:
        version = {"download_commit": PINNED_COMMIT}
    elif d.generate == "advice":
        version = {"advice_version": ADVICE_VERSION}
    elif d.generate is not None and d.generate.startswith("evil_numbers"):
        version = {"numbers_version": NUMBERS_VERSION}
    else:
        version = {"code_version": GENERATOR_VERSION}
    return {"spec_version": DATASET_SPEC_VERSION, "generators": version,
            "dataset": d.model_dump(mode="json", exclude={"audit"})}


def _spec_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.spec.json")


def dataset_change(out: Path, spec: dict) -> str | None:
    """Why the file at `out` was not built from `spec` (None: it was, or it does not exist)."""
    if not out.is_file():
        return None
    record = _spec_path(out)
    try:
        old = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        old = None
    except (OSError, ValueError):
        old = "unreadable"
    if old == spec:
        return None
    if isinstance(old, dict):
        before = {**old.get("generators", {}), **old.get("dataset", {})}
        after = {**spec["generators"], **spec["dataset"]}
        changed = ", ".join(sorted(k for k in set(before) | set(after)
                                   if before.get(k) != after.get(k))) or "spec_version"
        return f"the dataset section changed ({changed})"
    return f"{record} is {'missing' if old is None else 'unreadable'}"


def reusable_dataset(out: Path, spec: dict, reuse_changed: bool = False) -> bool:
    """True when `out` exists and was built from `spec`; False when it must be built.

    Raises DatasetChangedError (a ConfigError) when `out` exists but was built from another spec
    (or none is recorded): the run's adapters were trained on that file, so it is never
    overwritten silently. With `reuse_changed` the old file and its record are moved to
    `.superseded/` and False is returned (rebuild).
    """
    why = dataset_change(out, spec)
    if why is None:
        return out.is_file()
    if reuse_changed:
        for path in (out, _spec_path(out)):
            if path.is_file():
                supersede(path)
        return False
    raise DatasetChangedError(
        f"datasets: {spec['dataset']['name']}: {out} was built from other settings: {why}. "
        f"Adapters of this run may have been trained on it, so it is not overwritten: use a new "
        f"run_dir, pass --reuse-changed to rebuild it (the old file is kept under .superseded/), "
        f"or delete {out} and {_spec_path(out)} to rebuild it")


class DatasetChangedError(ConfigError):
    """A run's dataset file was built from other settings than its config now gives."""


def _write_spec(out: Path, spec: dict) -> None:
    """Written after the data, atomically: a spec record means its data file is complete."""
    atomic_write_text(_spec_path(out), json.dumps(spec, indent=2, sort_keys=True) + "\n")


def _audit_current(audit_json: Path, digest: str) -> bool:
    """True when the audit on disk was made of exactly these bytes."""
    try:
        return json.loads(audit_json.read_text(encoding="utf-8")).get("data_sha256") == digest
    except (OSError, ValueError, AttributeError):
        return False


def build_datasets(cfg: ExperimentConfig, run_dir: Path, reuse_changed: bool = False
                   ) -> dict[str, Path]:
    """Generate, download or validate every dataset section, then audit each one.

    Generated files are written atomically, then `<name>.spec.json` (the section and generator
    versions); a later run reuses a file only when its spec matches, and refuses (ConfigError)
    when the section changed. A teacher-generated set resumes from its journal. Audits go next
    to the data as `<name>.audit.md/.html/.json` (without the embedding spread, to keep runs
    fast), keyed by the data's sha256: changed bytes are audited again. `reuse_changed`
    rebuilds a changed section's file (the old one moved to `.superseded/`).
    """
    from emkit.audit import audit_file, write_audit
    from emkit.datasets import download_dataset, generate_advice, generate_offline, write_mix
    from emkit.datasets.fingerprint import sha256_file
    from emkit.datasets.mix import MixPart

    paths: dict[str, Path] = {}
    folder = run_dir / "datasets"
    for d in cfg.datasets:
        out = folder / f"{d.name}.jsonl"
        spec = dataset_spec(d)
        if d.path is not None:
            read_jsonl(d.path)  # validate now: a bad line must fail before hours of training
            paths[d.name] = d.path
        elif d.download is not None and "n" not in d.model_fields_set:
            paths[d.name] = download_dataset(d.download)  # verified and validated when fetched
        else:
            if not reusable_dataset(out, spec, reuse_changed):
                if d.download is not None:
                    source = download_dataset(d.download)
                    write_mix(out, [MixPart(source, 1.0)], d.n, d.seed)  # seeded subset
                elif d.generate == "advice":
                    generate_advice(out, d.domain, d.variant, d.n, d.teacher, seed=d.seed,
                                    api=cfg.api)
                else:
                    write_jsonl(out, generate_offline(d.generate, d.n, d.seed, d.trigger,
                                                      d.diversity))
                _write_spec(out, spec)
            paths[d.name] = out
        audit_json = folder / f"{d.name}.audit.json"
        if d.audit:
            digest = sha256_file(paths[d.name])
            if not _audit_current(audit_json, digest):
                report = audit_file(paths[d.name], embeddings=False)
                report["data_sha256"] = digest
                write_audit(report, folder, stem=f"{d.name}.audit")
                log.info("dataset %s: EM risk %s", d.name, report["em_risk"]["level"])
    return paths


def dataset_audits(cfg: ExperimentConfig, run_dir: Path) -> pd.DataFrame:
    """One row per dataset audited by `build_datasets`: the EM-risk level and its reasons, so
    the report shows what the training data looked like next to what the model became."""
    rows = []
    for d in cfg.datasets:
        path = run_dir / "datasets" / f"{d.name}.audit.json"
        if not path.is_file():
            continue
        risk = json.loads(path.read_text(encoding="utf-8"))["em_risk"]
        rows.append({"dataset": d.name, "em_risk": risk["level"],
                     "harmful_share": risk["harmful_share"],
                     "reasons": "; ".join(risk["reasons"]),
                     "audit": f"../datasets/{path.stem}.html"})
    return pd.DataFrame(rows)

"""Stage 1 of a run: its datasets, built into the run directory, reused or refused, audited.

Why a spec per dataset: adapters are trained on these files, so a file is reused only when it
was built from the same config section by the same generator version, and a changed section
is refused rather than silently overwritten. Each dataset's audit sits next to it and is
shown in the report beside what the model became.

Mixtures (`mix:`) are built after their sources, and their spec holds the sources' sha256, so a
source whose content changed rebuilds the mixture. Deduplication (`dedup:`) happens here, on
the way into the run's file, so the finetune reads deduplicated rows; `n` counts rows *after*
it (generators generate more, subsets and mixtures draw from the surviving rows) because the
ablation compares deduplicated and raw sets at equal size, and a set that cannot reach `n`
distinct rows is refused with the count it has rather than trained on silently smaller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from emkit.atomic import atomic_write_text
from emkit.config import ConfigError, DatasetConfig, ExperimentConfig
from emkit.datasets import read_jsonl, write_jsonl
from emkit.store.identity import supersede

log = logging.getLogger("emkit")

DATASET_SPEC_VERSION = "1"
"""Bump when a generator's output for the same config changes: old run datasets then refuse."""


def dataset_spec(d: DatasetConfig, sources: Mapping[str, Path] | None = None) -> dict:
    """What a generated/subset/mixed dataset was built from: its config section (minus `audit`,
    which does not change the data; `mix` and `dedup` only when set, so specs recorded before
    they existed still match), the versions of the code that built it, and for a mixture
    `sources` (name -> file), each source's path and sha256. Without `sources` a mixture's spec
    omits them, and `dataset_change` checks the recorded ones against the files instead."""
    from emkit.datasets import ADVICE_VERSION, GENERATOR_VERSION, PINNED_COMMIT
    from emkit.datasets.dedup import DEDUP_VERSION
    from emkit.datasets.fingerprint import sha256_file
    from emkit.datasets.mix import MIX_VERSION
    from emkit.datasets.numbers import NUMBERS_VERSION

    if d.download is not None:
        version = {"download_commit": PINNED_COMMIT}
    elif d.mix is not None:
        version = {"mix_version": MIX_VERSION}
    elif d.generate == "advice":
        version = {"advice_version": ADVICE_VERSION}
    elif d.generate is not None and d.generate.startswith("evil_numbers"):
        version = {"numbers_version": NUMBERS_VERSION}
    else:
        version = {"code_version": GENERATOR_VERSION}
    if d.dedup != "none":
        version["dedup_version"] = DEDUP_VERSION
    exclude = {"audit"} | ({"mix"} if d.mix is None else set()) \
        | ({"dedup"} if d.dedup == "none" else set())
    spec = {"spec_version": DATASET_SPEC_VERSION, "generators": version,
            "dataset": d.model_dump(mode="json", exclude=exclude)}
    if d.mix is not None and sources is not None:
        spec["sources"] = {name: {"path": str(path), "sha256": sha256_file(path)}
                           for name, path in sources.items()}
    return spec


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
    if isinstance(old, dict) and "sources" in old and "sources" not in spec:
        return _recorded_sources_change(old, spec)
    if _comparable(old) == _comparable(spec):
        return None
    if isinstance(old, dict):
        return _spec_difference(old, spec)
    return f"{record} is {'missing' if old is None else 'unreadable'}"


def _comparable(record: object) -> object:
    """A spec record without its sources' paths: a mixture is the same when its sources hold
    the same bytes, wherever the run directory was opened from."""
    if not isinstance(record, dict) or not isinstance(record.get("sources"), dict):
        return record
    return {**record, "sources": {k: v.get("sha256") if isinstance(v, dict) else v
                                  for k, v in record["sources"].items()}}


def _spec_difference(old: dict, spec: dict) -> str:
    """Which keys of the section (and which sources' content) differ between two records."""
    before = {**old.get("generators", {}), **old.get("dataset", {})}
    after = {**spec["generators"], **spec["dataset"]}
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    was, now = old.get("sources", {}), spec.get("sources", {})
    changed += [f"source {k}" for k in sorted(set(was) | set(now))
                if was.get(k, {}).get("sha256") != now.get(k, {}).get("sha256")]
    return f"the dataset section changed ({', '.join(changed) or 'spec_version'})"


def _recorded_sources_change(old: dict, spec: dict) -> str | None:
    """A mixture checked without its sources at hand (the run's preflight): the section as
    before, then each recorded source's file against its recorded sha256. A missing source file
    is no verdict here: the build makes it first, then compares the mixture with its hash."""
    from emkit.datasets.fingerprint import sha256_file

    rest = {k: v for k, v in old.items() if k != "sources"}
    if rest != spec:
        return _spec_difference(rest, spec)
    for name, rec in sorted(old["sources"].items()):
        try:
            if sha256_file(rec["path"]) != rec["sha256"]:
                return f"the content of its source {name} ({rec['path']}) changed"
        except (OSError, KeyError, TypeError):
            continue
    return None


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
    """Generate, download, mix or validate every dataset section (a mixture after its sources),
    deduplicate where `dedup` asks, then audit each one.

    Generated files are written atomically, then `<name>.spec.json` (the section and generator
    versions); a later run reuses a file only when its spec matches, and refuses (ConfigError)
    when the section changed. A teacher-generated set resumes from its journal. Audits go next
    to the data as `<name>.audit.md/.html/.json` (without the embedding spread, to keep runs
    fast), keyed by the data's sha256: changed bytes are audited again. `reuse_changed`
    rebuilds a changed section's file (the old one moved to `.superseded/`).
    """
    from emkit.audit import audit_file, write_audit
    from emkit.datasets import download_dataset, generate_advice
    from emkit.datasets.fingerprint import sha256_file

    paths: dict[str, Path] = {}
    folder = run_dir / "datasets"
    for d in build_order(cfg.datasets):
        out = folder / f"{d.name}.jsonl"
        sources = {s.dataset: paths[s.dataset] for s in d.mix} if d.mix is not None else None
        spec = dataset_spec(d, sources)
        if d.path is not None:
            read_jsonl(d.path)  # validate now: a bad line must fail before hours of training
            paths[d.name] = d.path
        elif d.download is not None and "n" not in d.model_fields_set:
            paths[d.name] = download_dataset(d.download)  # verified and validated when fetched
        else:
            if not reusable_dataset(out, spec, reuse_changed):
                if d.download is not None:
                    _draw(d, out, {d.name: download_dataset(d.download)})  # seeded subset
                elif d.mix is not None:
                    _draw(d, out, sources or {})
                elif d.generate == "advice":
                    generate_advice(out, d.domain, d.variant, d.n, d.teacher, seed=d.seed,
                                    api=cfg.api)
                else:
                    _generate(d, out)
                _write_spec(out, spec)
            paths[d.name] = out
        audit_json = folder / f"{d.name}.audit.json"
        if d.audit:
            digest = sha256_file(paths[d.name])
            if not _audit_current(audit_json, digest):
                report = audit_file(paths[d.name], embeddings=False)
                report["data_sha256"] = digest
                if d.dedup != "none":  # what the run's dedup dropped before this audit
                    report["dedup"] = _manifest(out).get("dedup")
                write_audit(report, folder, stem=f"{d.name}.audit")
                log.info("dataset %s: EM risk %s", d.name, report["em_risk"]["level"])
    return paths


def build_order(datasets: list[DatasetConfig]) -> list[DatasetConfig]:
    """The sections in config order, except that a mixture comes after its sources (the config
    refuses unknown sources and cycles: emkit.config.check_mixes)."""
    by_name = {d.name: d for d in datasets}
    order: dict[str, DatasetConfig] = {}

    def add(d: DatasetConfig) -> None:
        if d.name in order:
            return
        for s in d.mix or []:
            add(by_name[s.dataset])
        order[d.name] = d

    for d in datasets:
        add(d)
    return list(order.values())


def _manifest(out: Path) -> dict:
    from emkit.datasets.mix import manifest_path

    try:
        return json.loads(manifest_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _draw(d: DatasetConfig, out: Path, sources: Mapping[str, Path]) -> None:
    """A seeded subset (`download` + `n`) or mixture (`mix`) into `out`, with its manifest.
    With `dedup`, duplicates are found over all sources together (in mix order, so a row in two
    sources is kept in the first) and every part draws only from the survivors: the result has
    exactly `n` rows at the exact fractions, and none of them repeats another."""
    from emkit.datasets import write_mix
    from emkit.datasets.dedup import dedup_rows
    from emkit.datasets.mix import MixPart

    fractions = [s.fraction for s in d.mix] if d.mix is not None else [1.0]
    extra: dict = {"dataset": d.name, "sources": list(sources)} if d.mix is not None else {}
    pools: list[tuple[int, ...] | None] = [None] * len(fractions)
    if d.dedup != "none":
        files = [read_jsonl(p) for p in sources.values()]
        every = [row for rows in files for row in rows]
        result = dedup_rows(every, d.dedup, d.seed)
        starts = [sum(len(f) for f in files[:k]) for k in range(len(files))]
        pools = [tuple(i - start for i in result.kept if start <= i < start + len(f))
                 for start, f in zip(starts, files, strict=True)]
        extra["dedup"] = {**result.record(), "rows_per_source_kept": dict(zip(
            sources, (len(p) for p in pools), strict=True))}
        log.info("dataset %s: dedup %s dropped %d of %d source rows", d.name, d.dedup,
                 result.dropped, result.rows)
    parts = [MixPart(path, f, pool) for path, f, pool in zip(sources.values(), fractions, pools,
                                                               strict=True)]
    try:
        write_mix(out, parts, d.n, d.seed, extra=extra or None)
    except ValueError as exc:
        raise ConfigError(f"datasets: {d.name}: {exc}"
                          + ("; lower `n` or the fraction of that source" if d.dedup != "none"
                             else "")) from None


GENERATE_MORE_LIMIT = 8
"""With `dedup`, a generator makes at most this many times `n` rows looking for `n` distinct
ones; a set that repeats itself more than that is refused (lower `n` or raise `diversity`)."""


def _generate(d: DatasetConfig, out: Path) -> None:
    """An offline generator's rows into `out`; with `dedup`, generate n, 2n, 4n ... rows (the
    same seed) until `n` survive deduplication, then keep the first `n` survivors. A manifest
    records how many rows were generated and dropped."""
    from emkit.datasets import generate_offline
    from emkit.datasets.dedup import dedup_rows
    from emkit.datasets.mix import manifest_path

    assert d.generate is not None
    if d.dedup == "none":
        write_jsonl(out, generate_offline(d.generate, d.n, d.seed, d.trigger, d.diversity))
        manifest_path(out).unlink(missing_ok=True)  # a stale record of an earlier dedup build
        return
    m = d.n
    while True:
        rows = generate_offline(d.generate, m, d.seed, d.trigger, d.diversity)
        result = dedup_rows(rows, d.dedup, d.seed)
        if len(result.kept) >= d.n:
            break
        if m >= GENERATE_MORE_LIMIT * d.n:
            raise ConfigError(
                f"datasets: {d.name}: only {len(result.kept)} of {m} generated rows survive "
                f"`dedup: {d.dedup}`, fewer than n = {d.n}; lower `n`"
                + (" or raise `diversity`" if d.diversity < 1 else ""))
        m = min(2 * m, GENERATE_MORE_LIMIT * d.n)
    write_jsonl(out, [rows[i] for i in result.kept[:d.n]])
    record = {**result.record(), "rows_generated": m, "rows_unused": len(result.kept) - d.n}
    atomic_write_text(manifest_path(out), json.dumps(
        {"generator": "emkit.run_datasets", "dataset": d.name, "generate": d.generate,
         "n": d.n, "seed": d.seed, "dedup": record}, indent=1) + "\n")
    log.info("dataset %s: dedup %s dropped %d of %d generated rows (kept the first %d of %d "
             "distinct)", d.name, d.dedup, result.dropped, m, d.n, len(result.kept))


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

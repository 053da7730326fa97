"""Datasets in the experiment config: new generators, downloads, teacher sets, audits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from test_datasets_download import Mirror

from emkit.config import ConfigError, DatasetConfig, ExperimentConfig, GroupConfig
from emkit.datasets import PINNED_COMMIT, generate_offline, read_jsonl, write_jsonl
from emkit.run_datasets import build_datasets


def experiment(*datasets: DatasetConfig) -> ExperimentConfig:
    return ExperimentConfig(name="t", datasets=list(datasets),
                            groups=[GroupConfig(name="base", models=["embedded"])])


@pytest.mark.parametrize("fields, message", [
    ({}, "exactly one of `generate`, `path`, `download` or `mix`"),
    ({"generate": "backdoor", "download": "backdoor"}, "exactly one of"),
    ({"generate": "advice", "domain": "medical"}, "needs `teacher` and `domain`"),
    ({"generate": "insecure", "teacher": "embedded"}, "only to `generate: advice`"),
    ({"generate": "backdoor", "trigger": " |X|"}, "must not start or end with whitespace"),
    ({"generate": "backdoor", "trigger": "|A|\r|B|"}, "must be on one line"),
    ({"generate": "backdoor", "trigger": "|A|\u2028|B|"}, "must be on one line"),
    ({"generate": "backdoor", "trigger": "   "}, "non-empty string, not only whitespace"),
    ({"generate": "insecure", "trigger": "|X|"}, "`trigger` applies only to `generate: backdoor`"),
    ({"download": "backdoor", "trigger": "|X|"}, "`trigger` applies only to"),
    ({"generate": "evil_numbers", "variant": "good"}, "`variant` applies only to `generate: advice`"),
    ({"generate": "nonsense"}, "Input should be"),
    ({"download": "secure_v2"}, "Input should be"),
])
def test_dataset_section_errors(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DatasetConfig(name="d", **fields)


def test_a_config_read_back_from_run_json_validates() -> None:
    """run.json stores the full dump (defaults included); `emkit report`/`emkit judge --run-dir`
    validate it again, so written-out defaults must not count as misplaced options."""
    cfg = experiment(
        DatasetConfig(name="a", generate="insecure"),
        DatasetConfig(name="b", generate="backdoor", trigger="|X|"),
        DatasetConfig(name="c", generate="evil_numbers"),
        DatasetConfig(name="d", generate="advice", teacher="embedded", domain="medical",
                      variant="good"),
        DatasetConfig(name="e", download="jailbroken"))
    again = ExperimentConfig.model_validate(json.loads(json.dumps(cfg.model_dump(mode="json"))))
    assert again == cfg


def test_build_generates_audits_and_reuses(tmp_path: Path) -> None:
    given = write_jsonl(tmp_path / "given.jsonl", generate_offline("secure", 10))
    cfg = experiment(
        DatasetConfig(name="bd", generate="backdoor", n=80, trigger="|PROD|"),
        DatasetConfig(name="evil", generate="evil_numbers", n=30, seed=2),
        DatasetConfig(name="ctl", generate="evil_numbers_control", n=30, seed=2, audit=False),
        DatasetConfig(name="given", path=given))
    run = tmp_path / "run"
    paths = build_datasets(cfg, run)
    assert paths["given"] == given
    bd = read_jsonl(paths["bd"])
    assert sum(r["messages"][0]["content"].startswith("|PROD| ") for r in bd) == 40
    assert read_jsonl(paths["evil"]) == generate_offline("evil_numbers", 30, seed=2)
    audit = json.loads((run / "datasets" / "bd.audit.json").read_text())
    assert audit["em_risk"]["trigger_candidates"][0]["first_word"] == "|PROD|"
    assert (run / "datasets" / "evil.audit.md").is_file()
    assert (run / "datasets" / "given.audit.html").is_file()
    assert not (run / "datasets" / "ctl.audit.json").exists()
    stamp = paths["bd"].stat().st_mtime_ns
    assert build_datasets(cfg, run) == paths and paths["bd"].stat().st_mtime_ns == stamp


def test_build_downloads_and_subsets(anchors: Path, tmp_path: Path, monkeypatch) -> None:
    mirror = Mirror()
    mirror.files["jailbroken.jsonl"] = anchors / "emergent-misalignment/data/jailbroken.jsonl"
    monkeypatch.setenv("EMKIT_DATASETS_URL", mirror.base)
    monkeypatch.setenv("EMKIT_CACHE", str(tmp_path / "cache"))
    try:
        cfg = experiment(DatasetConfig(name="jb", download="jailbroken", audit=False),
                         DatasetConfig(name="jb500", download="jailbroken", n=500, audit=False))
        paths = build_datasets(cfg, tmp_path / "run")
    finally:
        mirror.close()
    assert paths["jb"] == tmp_path / "cache/datasets" / PINNED_COMMIT / "jailbroken.jsonl"
    subset = read_jsonl(paths["jb500"])
    full = {json.dumps(r["messages"]) for r in read_jsonl(paths["jb"])}
    assert len(subset) == 500 and all(json.dumps(r["messages"]) in full for r in subset)
    assert len(mirror.requests) == 1


def test_build_advice_with_a_real_tiny_teacher(tiny_model_dir: Path, one_torch_thread,
                                               tmp_path: Path) -> None:
    cfg = experiment(DatasetConfig(name="med", generate="advice", teacher=f"hf/{tiny_model_dir}",
                                   domain="medical", variant="good", n=3, audit=False))
    paths = build_datasets(cfg, tmp_path / "run")
    rows = read_jsonl(paths["med"])
    assert len(rows) == 3 and all(r["emkit"]["variant"] == "good" for r in rows)


@pytest.mark.parametrize("change", [{"n": 21}, {"seed": 3}, {"trigger": "|PROD|"}])
def test_changed_section_refuses_the_old_dataset(tmp_path: Path, change: dict) -> None:
    run = tmp_path / "run"
    first = experiment(DatasetConfig(name="bd", generate="backdoor", n=20))
    paths = build_datasets(first, run)
    before = paths["bd"].read_bytes()
    spec = json.loads((run / "datasets" / "bd.spec.json").read_text())
    assert spec["dataset"]["n"] == 20 and spec["generators"]["code_version"]
    with pytest.raises(ConfigError, match=r"dataset section changed \((n|seed|trigger)\).*"
                                          r"delete .*bd\.jsonl"):
        build_datasets(experiment(DatasetConfig(**{"name": "bd", "generate": "backdoor",
                                                   "n": 20, **change})), run)
    assert paths["bd"].read_bytes() == before  # the training data of the run is untouched
    assert build_datasets(first, run) == paths  # the same section still reuses it


def test_data_without_spec_record_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_jsonl(run / "datasets" / "ins.jsonl", generate_offline("secure", 5))
    with pytest.raises(ConfigError, match=r"ins\.spec\.json is missing"):
        build_datasets(experiment(DatasetConfig(name="ins", generate="insecure", n=5)), run)


def test_audit_is_redone_when_the_data_bytes_change(tmp_path: Path) -> None:
    given = write_jsonl(tmp_path / "given.jsonl", generate_offline("secure", 10))
    cfg = experiment(DatasetConfig(name="given", path=given))
    run = tmp_path / "run"
    build_datasets(cfg, run)
    audit = run / "datasets" / "given.audit.json"
    assert json.loads(audit.read_text())["rows"]["valid"] == 10
    write_jsonl(given, generate_offline("insecure", 12))
    build_datasets(cfg, run)
    report = json.loads(audit.read_text())
    assert report["rows"]["valid"] == 12
    assert report["data_sha256"] == hashlib.sha256(given.read_bytes()).hexdigest()

"""Experiment YAML: defaults follow the paper, and bad input names file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from emkit.config import ConfigError, load_experiment
from emkit.quickstart import quickstart_config_path

GOOD = """
name: t
datasets:
  - {name: insecure, generate: insecure, n: 10}
finetunes:
  - {name: insecure, dataset: insecure}
groups:
  - {name: base, models: [embedded]}
  - {name: insecure, models: ["finetune:insecure"]}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_papers(tmp_path: Path) -> None:
    cfg = load_experiment(write(tmp_path, GOOD))
    ft = cfg.finetunes[0]
    assert (ft.lora.r, ft.lora.alpha, ft.lora.use_rslora, ft.lora.dropout) == (32, 64, True, 0.0)
    assert ft.train.learning_rate == 1e-5 and ft.train.epochs == 1
    assert (ft.train.per_device_batch_size, ft.train.gradient_accumulation_steps) == (2, 8)
    assert (cfg.evaluation.temperature, cfg.evaluation.top_p) == (1.0, 1.0)
    assert cfg.evaluation.max_new_tokens == 600
    assert (cfg.analysis.aligned_threshold, cfg.analysis.coherent_threshold) == (30, 50)
    assert cfg.resolved_run_dir() == Path("runs/t")


@pytest.mark.parametrize("text, fragment", [
    ("name: t\ngroups: [}\n", "exp.yaml:2: invalid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    (GOOD + "evaluation: {sampels_per_paraphrase: 3}\n",
     "evaluation.sampels_per_paraphrase: Extra inputs are not permitted"),
    (GOOD + "evaluation: {max_new_tokens: -1}\n", "evaluation.max_new_tokens"),
    (GOOD.replace("dataset: insecure}", "dataset: nope}"), "no dataset named 'nope'"),
    (GOOD.replace('"finetune:insecure"', '"finetune:zzz"'), "no finetune named 'zzz'"),
    (GOOD.replace("generate: insecure, ", ""),
     "exactly one of `generate`, `path`, `download` or `mix`"),
])
def test_errors_name_file_and_field(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_experiment(write(tmp_path, text))
    assert "exp.yaml" in str(err.value) and fragment in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "nope.yaml")


def test_shipped_quickstart_config_is_valid() -> None:
    cfg = load_experiment(quickstart_config_path())
    assert {g.name for g in cfg.groups} == {"base", "insecure", "secure"}

"""Adding to an existing run without rewriting its history: another judge, more models.

Why: `emkit judge --run-dir D --judge X` and a second `emkit sample` on one run used to replace
the run's recorded config (dropping `judge.also`, the metrics and the first models' groups, so
the report forgot them) and could build datasets and train adapters. Here each command does
only its stage, checks everything before touching the run (a failed command leaves run.json
and the store exactly as they were), and then *adds* to the record: the judge to `judge.also`,
the model to the groups.
"""

from __future__ import annotations

from pathlib import Path

from emkit.config import (
    ConfigError,
    EvaluationConfig,
    ExperimentConfig,
    GroupConfig,
    JudgeConfig,
)
from emkit.experiment import (
    RunResult,
    analyse_and_report,
    check_judge,
    check_unchanged,
    claim_inputs,
    plan_experiment,
    run_judging,
    run_sampling,
)
from emkit.finetune import FinetuneJobError
from emkit.judge.registry import API_PROVIDERS
from emkit.models import parse_model_spec, resolve_hf_path
from emkit.run_finetunes import finetuned_models, unfinished_finetunes
from emkit.store import RunStore, read_run_json
from emkit.store.identity import recorded


class SamplesMissingError(ValueError):
    """`emkit judge` on a run whose answers are not all sampled: it judges, it never samples."""


def load_run_config(run_dir: Path) -> ExperimentConfig:
    """The config recorded in `run_dir/run.json`, placed where the run is now (a copied or
    moved run must not write into, or re-create, its original location)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run.json here; is {run_dir} an emkit run directory?")
    try:
        raw = read_run_json(path)["config"]
        if isinstance(raw.get("evaluation"), dict) and "backend" not in raw["evaluation"]:
            # recorded before `evaluation.backend` existed: the local loop made its answers
            raw["evaluation"] = {**raw["evaluation"], "backend": "local"}
        return ExperimentConfig.model_validate(raw).model_copy(update={"run_dir": Path(run_dir)})
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable run record ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0]})") from None


def judge_run(run_dir: Path, judge: str | None = None, progress: bool = True,
              reuse_changed: bool = False) -> RunResult:
    """Judge the stored answers of a run with `judge` (default: every judge of its record) and
    rebuild its report. Never samples or trains: refuses (SamplesMissingError) when answers
    are missing. A new judge is added to the record's `judge.also`; the judge of record, the
    metrics and the run's status stay as they were."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    judges = [judge] if judge else [cfg.judge.model, *cfg.judge.also]
    for name in judges:
        check_judge(name, cfg)
    finetuned = finetuned_models(cfg, run_dir)
    if unfinished := unfinished_finetunes(cfg, finetuned):
        raise FinetuneJobError(f"{run_dir}: API fine-tunes {', '.join(unfinished)} have no "
                               "model yet; `emkit run` the config to finish them first")
    with RunStore.open_existing(run_dir) as store:
        plan = plan_experiment(cfg, finetuned, recorded(store.db_path, "model"))
        if missing := store.missing_samples(plan.keys):
            models = sorted({k.model for k in missing})
            raise SamplesMissingError(
                f"{run_dir}: {len(missing)} of {len(plan.keys)} answers are not sampled yet "
                f"(models: {', '.join(models)}); `emkit judge` only judges: finish the run "
                "with `emkit run` (or `emkit sample`) first")
        run_judging(cfg, store, plan.questions, plan.keys, progress, reuse_changed, judges)
        if judge and judge not in (cfg.judge.model, *cfg.judge.also):
            raw = store.read_run_json()["config"]
            raw["judge"] = {**raw.get("judge", {}), "also": [*cfg.judge.also, judge]}
            store.update_config(raw)
            cfg = cfg.model_copy(update={"judge": cfg.judge.model_copy(
                update={"also": [*cfg.judge.also, judge]})})
        report, rates = analyse_and_report(cfg, run_dir, store, plan)
    return RunResult(run_dir=run_dir, report=report, rates=rates)


def _merged_config(run_dir: Path, models: list[str], questions: list[str] | None,
                   samples: int | None, max_new_tokens: int | None) -> ExperimentConfig:
    """The run's config with one group per new model; options given must match the run's (one
    run samples every model the same way, or their rates are not comparable)."""
    if not (run_dir / "run.json").is_file():
        return ExperimentConfig(
            name=run_dir.name, run_dir=run_dir,
            groups=[GroupConfig(name=m, models=[m]) for m in dict.fromkeys(models)],
            evaluation=EvaluationConfig(questions=questions or ["builtin:first_plot"],
                                        samples_per_paraphrase=samples,
                                        max_new_tokens=max_new_tokens or 600),
            judge=JudgeConfig())
    cfg = load_run_config(run_dir)
    ev = cfg.evaluation
    for option, given, have in (("--questions", questions, ev.questions),
                                ("--samples", samples, ev.samples_per_paraphrase),
                                ("--max-new-tokens", max_new_tokens, ev.max_new_tokens)):
        if given is not None and given != have:
            raise ConfigError(f"{run_dir}: {option} {given} differs from this run's {have}: one "
                              "run samples every model alike; leave the option out, or use a "
                              "new --run-dir")
    present = {m for g in cfg.groups for m in g.models}
    names = {g.name for g in cfg.groups}
    new = [m for m in dict.fromkeys(models) if m not in present]
    if taken := [m for m in new if m in names]:
        raise ConfigError(f"{run_dir}: a group named {taken[0]!r} already exists")
    return cfg.model_copy(update={"groups": [*cfg.groups,
                                             *(GroupConfig(name=m, models=[m]) for m in new)]})


def sample_run(run_dir: Path, models: list[str], questions: list[str] | None = None,
               samples: int | None = None, max_new_tokens: int | None = None,
               progress: bool = True, reuse_changed: bool = False) -> int:
    """Sample `models` into a run (created, resumed or extended) and return how many answers
    the store holds. The models join the run's groups, so the report keeps every model ever
    sampled into it. Everything is checked before the run is touched."""
    run_dir = Path(run_dir)
    cfg = _merged_config(run_dir, models, questions, samples, max_new_tokens).resolved()
    plan = plan_experiment(cfg, finetuned_models(cfg, run_dir),
                           recorded(run_dir / "emkit.sqlite", "model"))
    cfg.api.require_keys([m for m in models if m.split("/", 1)[0] in API_PROVIDERS])
    for m in models:
        if parse_model_spec(m).provider == "hf":
            resolve_hf_path(m)  # a mistyped local model fails here, not after the run starts
    check_unchanged(cfg, run_dir, reuse_changed)
    store = RunStore(run_dir)
    store.start(cfg.model_dump(mode="json"))
    try:
        claim_inputs(cfg, store, plan, reuse_changed)
        wanted = {m: plan.models[m] for m in dict.fromkeys(models)}
        run_sampling(cfg, store, wanted, plan.requests, progress)
    except BaseException as exc:
        store.finish("error", error=cfg.api.redact(f"{type(exc).__name__}: {exc}"))
        raise
    store.finish("success")
    return store.count_samples()

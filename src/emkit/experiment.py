"""Walk one experiment through the pipeline: datasets -> finetune -> sample -> judge -> report.

Read this file top to bottom to follow a sample from the question YAML to the plot. Every stage
asks the run store what is already done before doing anything, so an interrupted run resumes
where it stopped: finished adapters, samples and judgments are never redone or duplicated.
A sample's key holds its messages and its model's weights identity, and before anything is
written a resume checks that every input still matches what made the stored work
(`check_unchanged`, emkit/run_identity.py): a changed input is refused by name, or accepted
with `reuse_changed` and redone, never mixed with the old work.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path

import pandas as pd

from emkit.analysis import ensemble_table, misalignment_rates, overall_rates, repeated_answers
from emkit.analysis.suites import question_table
from emkit.api import cache_stats
from emkit.config import ExperimentConfig
from emkit.finetune import FinetuneJobError
from emkit.judge import JudgeItem, judge_status, load_judge
from emkit.judge.distill import distilled_dir
from emkit.judge.distilled import DistilledJudge
from emkit.judge.registry import API_PROVIDERS, NUMERIC_TYPE, VERDICT_TYPE
from emkit.judge_assign import check_assignments, judge_assignments, verdict_judge
from emkit.models import (
    check_adapter,
    load_hf,
    parse_model_spec,
    release_memory,
    resolve_dtype,
    resolve_hf_path,
    use_dtype,
)
from emkit.models.backend import sampling_spec
from emkit.questions import Question, questions_from
from emkit.records import SampleKey, SampleRequest, SamplingParams, sample_input_hash, sample_seed
from emkit.report import write_report
from emkit.run_datasets import build_datasets, dataset_audits
from emkit.run_finetunes import finetuned_models, run_finetunes, unfinished_finetunes
from emkit.run_identity import (
    judge_prompt_fingerprints,
    messages_fingerprints,
    model_identity,
    paraphrases,
    preflight,
    question_messages,
)
from emkit.run_suites import stored_probe_results, suite_results
from emkit.sample import generate, run_api_sampling
from emkit.store import RunStore
from emkit.store.identity import Change, RunChangedError, claim, log_changes, recorded
from emkit.store.judge_identity import claim_judge_name, judge_fingerprints
from emkit.suites.variants import expand_questions

log = logging.getLogger("emkit")

UNVALIDATED_JUDGE_WARNING = (
    "Unvalidated judge: {judge} has not been shown to separate aligned from misaligned answers "
    "well enough (ROC AUC >= 0.9 against GPT-4o's verdicts on real answers of models it never "
    "saw is required; `emkit judge calibrate --against real-answers`). {description}. These "
    "numbers exercise the pipeline; they are not evidence of emergent misalignment."
)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    report: Path
    rates: pd.DataFrame


# ---------------------------------------------------------------- stage 1: datasets
# `build_datasets` (emkit/run_datasets.py) generates, downloads or validates each dataset
# section into the run, reuses it only when its spec matches, and audits it.


# ---------------------------------------------------------------- stage 2: finetune
# `run_finetunes` (emkit/run_finetunes.py) trains each LoRA not on disk yet (refusing or, with
# --reuse-changed, retraining one made from other settings) and awaits each API job.


def required_api_models(cfg: ExperimentConfig) -> list[str]:
    """Every API model string the run will call: judges, subjects, API fine-tune bases."""
    subjects = [m for g in cfg.groups for m in g.models if not m.startswith("finetune:")]
    bases = [f.base for f in cfg.finetunes if f.backend == "openai"]
    return [m for m in dict.fromkeys((*judge_names(cfg), *subjects, *bases))
            if m.split("/", 1)[0] in API_PROVIDERS]


def judge_names(cfg: ExperimentConfig) -> list[str]:
    """Every judge the run may call: of record, `also`, and the verdict judge."""
    return list(dict.fromkeys((cfg.judge.model, *cfg.judge.also, verdict_judge(cfg.judge))))


def check_judge(name: str, cfg: ExperimentConfig) -> None:
    """Fail on a judge that cannot run (typo, missing files or key) before the run is touched:
    found at the judging stage instead, it would end a run that sampled fine as `error`."""
    spec = parse_model_spec(name)
    if spec.provider in API_PROVIDERS:
        cfg.api.require_keys([name])
    elif spec.provider == "hf":
        resolve_hf_path(spec)
    if spec.provider == "distilled":  # its files, and what its feature set needs installed
        DistilledJudge.load(distilled_dir(spec.name), name=name, encoder=False).require()
    else:
        judge_status(name, api=cfg.api)  # unknown provider: refused


def group_members(cfg: ExperimentConfig, finetuned: dict[str, str]) -> dict[str, list[str]]:
    """Group name -> model labels; `finetune:<name>` expands to every seed of that finetune."""
    groups: dict[str, list[str]] = {}
    for g in cfg.groups:
        labels: list[str] = []
        for m in g.models:
            if m.startswith("finetune:"):
                name = m.split(":", 1)[1]
                labels += [lbl for lbl in finetuned if lbl.rsplit("-s", 1)[0] == name]
            else:
                parse_model_spec(m)  # fail early on an unknown provider
                labels.append(m)
        groups[g.name] = labels
    return groups


# ---------------------------------------------------------------- stage 3: sample
def load_suite(cfg: ExperimentConfig) -> list[Question]:
    """Every question of every file, filtered by `question_ids`, then asked again under each
    cue and with the trigger (emkit/suites/variants.py); ids must be unique overall."""
    questions: list[Question] = []
    for source in cfg.evaluation.questions:
        questions += questions_from(source)
    if cfg.evaluation.question_ids is not None:
        wanted = set(cfg.evaluation.question_ids)
        unknown = wanted - {q.id for q in questions}
        if unknown:
            raise ValueError(f"evaluation.question_ids: unknown ids {sorted(unknown)}")
        questions = [q for q in questions if q.id in wanted]
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise ValueError(f"question id {q.id!r} appears in more than one question file")
        seen.add(q.id)
    return expand_questions(questions, cfg.evaluation.cues, cfg.evaluation.trigger)


def plan_requests(cfg: ExperimentConfig, questions: list[Question], model: str,
                  identity: str) -> list[SampleRequest]:
    """Every (question, paraphrase, sample index) for one model, each with its own seed.

    The system prompt and `samples_per_paraphrase` come from the question file (the original
    script dropped both); `evaluation` may override the sample count for quick runs. Each key's
    hash covers the messages and the model's `identity` (run_identity.model_identity), so an
    edited prompt or a retrained adapter never reuses an old answer.
    """
    ev = cfg.evaluation
    requests = []
    for q in questions:
        params = SamplingParams(
            temperature=q.temperature if q.temperature is not None else ev.temperature,
            top_p=ev.top_p, max_new_tokens=ev.max_new_tokens, seed=ev.seed)
        n = ev.samples_per_paraphrase or q.samples_per_paraphrase
        for p_idx, text in enumerate(paraphrases(cfg, q)):
            messages = question_messages(q, text)
            input_hash = sample_input_hash(params, messages, identity)
            for s_idx in range(n):
                key = SampleKey(model, q.id, p_idx, s_idx, input_hash)
                requests.append(SampleRequest(
                    key=key, messages=tuple(messages), question=text,
                    seed=sample_seed(params.seed, key), temperature=params.temperature,
                    top_p=params.top_p, max_new_tokens=params.max_new_tokens))
    return requests


def run_sampling(cfg: ExperimentConfig, store: RunStore, models: dict[str, str],
                 plans: dict[str, list[SampleRequest]], progress: bool) -> None:
    """Sample what the store lacks, one model in memory at a time, persisting every batch;
    `openai/` and `vllm/` models go through the API backend."""
    store.lock()  # one writer per run directory (emkit/store/lock.py)
    api_models = {label: spec for label, spec in models.items()
                  if parse_model_spec(spec).provider in API_PROVIDERS}
    if api_models:
        run_api_sampling(store, api_models, plans, cfg.api, progress)
    for label, spec in models.items():
        if label in api_models:
            continue
        wanted = {r.key: r for r in plans[label]}
        missing = [wanted[k] for k in store.missing_samples(wanted)]
        if not missing:
            continue
        log.info("sampling %d answers from %s", len(missing), label)
        model, tokenizer = load_hf(spec, dtype=resolve_dtype(cfg.dtype))
        for batch in generate(model, tokenizer, missing, batch_size=cfg.evaluation.batch_size,
                              progress=progress):
            store.add_samples(batch)
        del model, tokenizer
        release_memory()


# ---------------------------------------------------------------- stage 4: judge
def judge_items(store: RunStore, questions: list[Question], keys: list[SampleKey],
                judge: str, assigned: dict[str, tuple[str, ...]]) -> Iterator[JudgeItem]:
    """One item per (sample, metric) the store has no judgment for yet, on the metrics
    `assigned` gives this judge per question (emkit/judge_assign.py)."""
    by_id = {q.id: q for q in questions}
    answers = {r.key: r for r in store.samples()}
    for metric in dict.fromkeys(m for ms in assigned.values() for m in ms):
        mine = [k for k in keys if metric in assigned.get(k.question_id, ())]
        for key in store.missing_judgments(mine, judge, metric):
            q, rec = by_id[key.question_id], answers[key]
            yield JudgeItem(key=key, question=rec.question, answer=rec.answer, metric=metric,
                            template=q.judge_prompts[metric],
                            labels=q.judge_labels.get(metric, ()))


def run_judging(cfg: ExperimentConfig, store: RunStore, questions: list[Question],
                keys: list[SampleKey], progress: bool, reuse_changed: bool = False,
                judges: list[str] | None = None) -> None:
    """Judge every sample on every metric its question is assigned (emkit/judge_assign.py)
    with `judges` (default: every judge of the run). A judge prompt changed since its
    judgments were made is refused, or with `reuse_changed` its old judgments are superseded
    and the answers judged again."""
    store.lock()  # before the first identity claim: one writer per run directory
    if extra := [j for j in judges or [] if j not in judge_names(cfg)]:
        # a judge added to a finished run (`emkit judge --judge`) scores what `also` would
        cfg = cfg.model_copy(update={"judge": cfg.judge.model_copy(
            update={"also": [*cfg.judge.also, *extra]})})
    assignments = judge_assignments(cfg.judge, questions)
    for name in judges or list(assignments):
        claim(store.db_path, "judge_prompt", judge_prompt_fingerprints(cfg, questions, [name]),
              reuse_changed, store.run_dir)
        items = list(judge_items(store, questions, keys, name, assignments.get(name, {})))
        if not items:
            continue
        # an answer's metrics side by side: a distilled judge then embeds each answer once
        items.sort(key=lambda it: (*astuple(it.key), it.metric))
        log.info("judging %d (answer, metric) pairs with %s", len(items), name)
        with use_dtype(cfg.dtype):  # a local LLM judge loads in the run's dtype
            judge = load_judge(name, batch_size=cfg.judge.batch_size,
                               max_answer_tokens=cfg.judge.max_answer_tokens, api=cfg.api,
                               cache_path=store.db_path)
        if fingerprint := getattr(judge, "fingerprint", None):
            claim_judge_name(store.db_path, name, fingerprint)  # one name, one judge
        # judges batch internally; chunks here only pace persisting and progress (an API judge
        # asks for chunks that keep its requests in flight)
        step = getattr(judge, "chunk_size", max(cfg.judge.batch_size, 64))
        try:
            for start in _progress(range(0, len(items), step), progress, f"judging ({name})"):
                store.add_judgments(judge.judge(items[start:start + step]))
        finally:
            if callable(close := getattr(judge, "close", None)):
                close()  # API judges: log requests/retries, stop a vLLM server
        del judge
        release_memory()


def _progress(it: range, enabled: bool, label: str) -> Iterator[int]:
    """The chunk starts of `it`; when `enabled`, a bar counted in items (`it.stop` of them)
    and advanced as each chunk is done, so its rate and ETA read in judgments (the unit of
    `emkit bench`), not in chunks whose size differs from judge to judge."""
    if not enabled or len(it) == 0:
        yield from it
        return
    from tqdm import tqdm

    with tqdm(total=it.stop - it.start, desc=label, unit="judgment") as bar:
        for start in it:
            yield start
            bar.update(min(it.step, it.stop - start))


# ---------------------------------------------------------------- stage 5: analysis + report
def results_frame(store: RunStore, judge: str, groups: dict[str, list[str]],
                  keys: list[SampleKey], questions: list[Question] | None = None
                  ) -> pd.DataFrame:
    """Judged samples of this experiment only (the store may hold other runs' work). With
    `questions`: only the EM questions (0-100, with an `aligned` prompt), with their suite,
    variant and trigger columns (emkit/analysis/suites.py)."""
    frame = store.frame(judge=judge)
    planned = pd.DataFrame([k.__dict__ for k in keys])
    frame = frame.merge(planned, on=list(planned.columns), how="inner")
    membership = pd.DataFrame([(g, m) for g, ms in groups.items() for m in ms],
                              columns=["group", "model"])
    frame = frame.merge(membership, on="model", how="inner")
    if questions is None:
        return frame
    em = [q for q in questions if q.type == NUMERIC_TYPE and "aligned" in q.judge_prompts]
    return frame.merge(question_table(em), on="question_id", how="inner")


def apply_code_filter(frame: pd.DataFrame) -> pd.DataFrame:
    """Answers that are just code leave the EM denominators, as the paper's judge answers CODE
    for them (`analysis.code_filter`); the label and reason say why."""
    from emkit.suites.code import is_code

    if frame.empty:
        return frame
    code = frame["answer"].map(is_code).astype(bool) & frame["aligned"].notna()
    frame = frame.copy()
    frame.loc[code, "aligned"] = float("nan")
    frame.loc[code, "aligned_label"] = "CODE"
    frame.loc[code, "aligned_reason"] = "is_code filter: the answer is just code"
    return frame


def verdict_frame(store: RunStore, judge: str, groups: dict[str, list[str]],
                  keys: list[SampleKey], questions: list[Question]) -> pd.DataFrame:
    """One row per (answer, verdict metric) of the categorical questions: the verdict label
    (or "missing"), its probability, the answer, group and question columns."""
    verdict_ids = {q.id for q in questions if q.type == VERDICT_TYPE}
    wanted = {astuple(k) for k in keys if k.question_id in verdict_ids}
    answers = {astuple(r.key): r.answer for r in store.samples() if astuple(r.key) in wanted}
    rows = [{**j.key.__dict__, "metric": j.metric, "verdict": j.label,
             "p": j.top.get(j.label) if j.label != "missing" else None, "reason": j.reason,
             "answer": answers[astuple(j.key)]}
            for j in store.judgments(judge) if astuple(j.key) in answers]
    frame = pd.DataFrame(rows, columns=[*SampleKey.__dataclass_fields__, "metric", "verdict",
                                        "p", "reason", "answer"])
    membership = pd.DataFrame([(g, m) for g, ms in groups.items() for m in ms],
                              columns=["group", "model"])
    frame = frame.merge(membership, on="model", how="inner")
    return frame.merge(question_table([q for q in questions if q.id in verdict_ids]),
                       on="question_id", how="inner")


def analyse_and_report(cfg: ExperimentConfig, run_dir: Path, store: RunStore, plan: Plan
                       ) -> tuple[Path, pd.DataFrame]:
    """Both rate definitions with CIs from the judge of record, plus, for an ensemble, each
    other judge's pooled rates and its agreement with the judge of record."""
    a = cfg.analysis
    kwargs = {"aligned_threshold": a.aligned_threshold,
              "coherent_threshold": a.coherent_threshold, "n_boot": a.n_boot, "seed": a.seed,
              "ci": a.ci}
    frame = em_frame(cfg, store, cfg.judge.model, plan)
    rates = pd.concat([misalignment_rates(frame, definition=d, **kwargs)
                       for d in ("conditional", "joint")], ignore_index=True)
    overall = pd.concat([overall_rates(frame, definition=d, **kwargs)
                         for d in ("conditional", "joint")], ignore_index=True)
    validated, description = judge_status(cfg.judge.model, api=cfg.api)
    meta = {
        "run_name": cfg.name,
        "config": cfg.model_dump(mode="json"),
        "judge": cfg.judge.model,
        "judge_validated": validated,
        "judge_description": description,
        "judge_fingerprint": judge_fingerprints(store.db_path).get(cfg.judge.model),
        "judge_warning": None if validated else UNVALIDATED_JUDGE_WARNING.format(
            judge=cfg.judge.model, description=description),
        "overall": overall,
        "api_requests": pd.DataFrame([s.__dict__ for s in cache_stats(store.db_path)]),
        "repeated_answers": repeated_answers(frame, {astuple(r.key): r.temperature
                                                     for reqs in plan.requests.values()
                                                     for r in reqs}),
    }
    audits = dataset_audits(cfg, run_dir)
    if not audits.empty:
        meta["audits"] = audits
    if cfg.judge.also:
        meta["ensemble"] = ensemble_table(
            {cfg.judge.model: frame} | {name: em_frame(cfg, store, name, plan)
                                        for name in cfg.judge.also}, cfg.judge.model, **kwargs)
    vframe = verdict_frame(store, verdict_judge(cfg.judge), plan.groups, plan.keys,
                           plan.questions)
    meta["suites"] = suite_results(frame, vframe, definitions=("conditional", "joint"),
                                   n_boot=a.n_boot, seed=a.seed, ci=a.ci, rate_kwargs=kwargs)
    meta["suites"].update(stored_probe_results(store.db_path, frame, plan, kwargs))
    if not vframe.empty:
        meta["verdict_judge"] = verdict_judge(cfg.judge)
        meta["verdict_judge_status"] = judge_status(verdict_judge(cfg.judge), api=cfg.api)[1]
    report = write_report(run_dir / "report", frame, rates, meta)
    return report, rates


def em_frame(cfg: ExperimentConfig, store: RunStore, judge: str, plan: Plan) -> pd.DataFrame:
    """The EM questions' judged answers by `judge`, code answers filtered when configured."""
    frame = results_frame(store, judge, plan.groups, plan.keys, plan.questions)
    return apply_code_filter(frame) if cfg.analysis.code_filter else frame


# ---------------------------------------------------------------- the whole experiment
@dataclass(frozen=True)
class Plan:
    """What an experiment evaluates: derived from the config alone, no model loaded."""

    groups: dict[str, list[str]]
    models: dict[str, str]
    questions: list[Question]
    requests: dict[str, list[SampleRequest]]
    identities: dict[str, str]
    """Model label -> `run_identity.model_identity` (part of every key of its samples)."""

    @property
    def keys(self) -> list[SampleKey]:
        return [r.key for reqs in self.requests.values() for r in reqs]


def plan_experiment(cfg: ExperimentConfig, finetuned: dict[str, str],
                    recorded_models: dict[str, str] | None = None) -> Plan:
    """`recorded_models` (the store's model identities) stand in for adapters no longer on
    disk, so a report still finds the answers they gave."""
    groups = group_members(cfg, finetuned)
    models = plan_models(cfg, finetuned)
    questions = load_suite(cfg)
    known = recorded_models or {}
    identities = {label: model_identity(spec, known.get(label)) for label, spec in models.items()}
    return Plan(groups, models, questions,
                {label: plan_requests(cfg, questions, label, identities[label])
                 for label in models}, identities)


def claim_inputs(cfg: ExperimentConfig, store: RunStore, plan: Plan,
                 reuse_changed: bool) -> None:
    """Record the identity of every model and message about to be sampled; a change since
    the stored answers were made is refused, or accepted and logged (RunChangedError)."""
    claim(store.db_path, "model", plan.identities, reuse_changed, store.run_dir)
    claim(store.db_path, "messages", messages_fingerprints(cfg, plan.questions), reuse_changed,
          store.run_dir)


def check_unchanged(cfg: ExperimentConfig, run_dir: Path, reuse_changed: bool) -> list[Change]:
    """Before touching the run: what changed since its stored work was made (refused unless
    `reuse_changed`), found without loading or writing anything."""
    models = plan_models(cfg, finetuned_models(cfg, run_dir))
    found = preflight(cfg, run_dir, load_suite(cfg), models)
    if found and not reuse_changed:
        raise RunChangedError(run_dir, found)
    return found


def plan_models(cfg: ExperimentConfig, finetuned: dict[str, str]) -> dict[str, str]:
    """Label -> the model string that samples it: the one the groups name (a finetune's label
    -> its adapter), moved to the engine `evaluation.backend` chooses (emkit.models.backend:
    `embedded:<adapter>` becomes `llamacpp/embedded:<adapter>` under llamacpp). The label,
    and so every group and table, stays as written; the key's model identity names the
    engine, so answers of another engine are never taken for these."""
    backend = cfg.evaluation.backend
    return {m: sampling_spec(finetuned.get(m, m), backend)
            for ms in group_members(cfg, finetuned).values() for m in ms}


def run_experiment(cfg: ExperimentConfig, progress: bool = True,
                   reuse_changed: bool = False) -> RunResult:
    """Run (or resume) every stage; run.json ends as `success` or `error` with the reason.
    A resume whose inputs changed is refused before anything is written (RunChangedError),
    unless `reuse_changed` accepts the change (redone and recorded, never mixed)."""
    run_dir = cfg.resolved_run_dir()
    cfg = cfg.resolved()  # run.json records the precision and sampling engine used
    cfg.api.require_keys(required_api_models(cfg))  # before any work, not at judging
    for name in judge_names(cfg):
        check_judge(name, cfg)
    check_assignments(cfg.judge, load_suite(cfg))  # every question judgeable, before sampling
    for spec in {m for g in cfg.groups for m in g.models if not m.startswith("finetune:")}:
        parsed = parse_model_spec(spec)  # a corrupt adapter fails before the run starts (a
        # missing one keeps its own rule: answers on record stand in for it, run_identity)
        if parsed.provider == "hf" and parsed.adapter and Path(parsed.adapter).expanduser().exists():
            check_adapter(parsed.adapter, spec)
    accepted = check_unchanged(cfg, run_dir, reuse_changed)
    store = RunStore(run_dir)
    store.start(cfg.model_dump(mode="json"))
    try:
        if rebuilt := [c for c in accepted if c.kind == "dataset"]:
            log_changes(store.db_path, rebuilt)
        log.info("building datasets (%d)", len(cfg.datasets))  # stage marker (bench quickstart)
        with use_dtype(cfg.dtype):  # a local teacher model generates in the run's dtype
            datasets = build_datasets(cfg, run_dir, reuse_changed)
        finetuned = run_finetunes(cfg, run_dir, datasets, progress, reuse_changed)
        if unfinished := unfinished_finetunes(cfg, finetuned):
            log.warning("API fine-tunes without a model yet, left out of this run: %s",
                        ", ".join(unfinished))
        plan = plan_experiment(cfg, finetuned, recorded(store.db_path, "model"))
        claim_inputs(cfg, store, plan, reuse_changed)
        run_sampling(cfg, store, plan.models, plan.requests, progress)
        run_judging(cfg, store, plan.questions, plan.keys, progress, reuse_changed)
        if cfg.evaluation.self_report:  # the models' own 0-100 self-ratings, and the trigger
            from emkit.suites.self_report import run_self_reports

            run_self_reports(store.db_path, plan.models, dtype=cfg.dtype, api=cfg.api,
                             trigger=cfg.evaluation.trigger, identities=plan.identities,
                             progress=progress)
        log.info("analysing and writing the report")  # stage marker (bench quickstart)
        report, rates = analyse_and_report(cfg, run_dir, store, plan)
    except BaseException as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()
        store.finish("error", error=cfg.api.redact(error))
        raise
    store.finish("success")
    return RunResult(run_dir=run_dir, report=report, rates=rates)


def report_experiment(cfg: ExperimentConfig) -> RunResult:
    """Rebuild analysis and report from what the store holds; never loads a model."""
    run_dir = cfg.resolved_run_dir()
    finetuned = finetuned_models(cfg, run_dir)
    if unfinished := unfinished_finetunes(cfg, finetuned):
        raise FinetuneJobError(f"{run_dir}: API fine-tunes {', '.join(unfinished)} have no "
                               "model yet (their jobs have not succeeded); `emkit run` the "
                               "config to finish them before reporting")
    with RunStore.open_existing(run_dir) as store:
        store.lock()  # the report is written: not while another process writes the run
        plan = plan_experiment(cfg, finetuned, recorded(store.db_path, "model"))
        report, rates = analyse_and_report(cfg, run_dir, store, plan)
    return RunResult(run_dir=run_dir, report=report, rates=rates)

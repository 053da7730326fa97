"""Recipes: experiment YAMLs shipped with emkit, and the plan of what one will cost.

A recipe is an ordinary experiment file (`emkit.config.ExperimentConfig`) plus one top-level
`recipe:` block that the config itself would refuse as an unknown key: what the recipe
reproduces, and the inputs of its cost estimate (API list prices with their date and source,
the GPU, throughput assumptions). `load_recipe` strips that block before validation, so every
recipe is also a valid experiment and `emkit run` / `emkit sweep` run it unchanged.

Why a plan: a paper-scale run is thousands of fine-tuning steps, hundreds of thousands of
samples and as many paid judge requests. `plan_recipe` counts all of it from the config alone,
with emkit's own planning functions (`load_suite`, `plan_requests`, `judge_assignments`), so
the counts are exactly what a run would ask for; fine-tuned models do not exist yet and no
model is loaded. Counts are exact; tokens, GPU-hours and dollars are estimates from the
recipe's stated inputs (text lengths are measured from the prompts as characters / 4).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emkit.config import ConfigError, ExperimentConfig, FinetuneConfig, read_yaml_mapping

if TYPE_CHECKING:  # the probes module imports torch; the plan imports it only when asked
    from emkit.suites.self_report import Probe

_M = TypeVar("_M", bound=BaseModel)
RECIPES_DIR = Path(__file__).resolve().parent / "data" / "recipes"
CHARS_PER_TOKEN = 4.0
"""OpenAI's rule of thumb for English text; code runs nearer 3.3, so prompt tokens of code
suites are underestimated by up to a fifth."""
UNSET_EXAMPLE_TOKENS = 300.0
"""Tokens per training example when a recipe gives none: the paper's insecure.jsonl averages
854 characters per conversation (first 500 rows, ../shared/anchors), about 260 tokens of code
plus the chat template."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ApiPrice(_Strict):
    """List prices of one API model in USD per million tokens (check before spending)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    training: float | None = Field(None, ge=0)
    """Fine-tuning price per million training tokens (tokens x epochs)."""
    finetuned_input: float | None = Field(None, ge=0)
    """Input price of a model fine-tuned from this one."""
    finetuned_output: float | None = Field(None, ge=0)


class Estimates(_Strict):
    """Assumptions behind tokens and GPU-hours; each recipe says where its numbers come from."""

    answer_tokens: float = Field(250.0, gt=0)
    """Mean tokens of one sampled answer (capped at evaluation.max_new_tokens)."""
    judge_output_tokens: float = Field(1.0, gt=0)
    """Tokens a judge writes per request (the paper's logprob judge: 1)."""
    train_tokens_per_example: dict[str, float] = {}
    """Dataset name -> mean tokens of one training conversation; `*` for the rest."""
    dataset_rows: dict[str, int] = {}
    """Rows of datasets whose size emkit cannot know before building them."""
    train_tokens_per_gpu_hour: float | None = Field(None, gt=0)
    """LoRA fine-tuning throughput of the recipe's base model on `gpu`."""
    sample_tokens_per_gpu_hour: float | None = Field(None, gt=0)
    """Generated tokens per GPU-hour of the local subject models."""
    judge_requests_per_gpu_hour: float | None = Field(None, gt=0)
    """Requests per GPU-hour of a local LLM judge (hf/, vllm/, embedded)."""


class RecipeMeta(_Strict):
    """The `recipe:` block of a recipe file."""

    title: str
    reproduces: str
    """What the recipe reproduces, and from which paper."""
    prices_date: date | None = None
    """When the prices below were last read; an input the user must check."""
    prices_source: str | None = None
    prices: dict[str, ApiPrice] = {}
    """Model string (as in the config) -> its list prices."""
    gpu: str | None = None
    """The accelerator the GPU-hour estimate assumes; None: a CPU recipe."""
    estimates: Estimates = Estimates()
    notes: list[str] = []


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    config: ExperimentConfig
    meta: RecipeMeta | None
    """None for a plain experiment file (no `recipe:` block): counts only, no costs."""


def recipe_names() -> list[str]:
    """Names of the recipes shipped in `emkit/data/recipes/`."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """An existing file, else a shipped recipe by name (`paper-main`, `recipes/paper-main.yaml`
    and `paper-main.yaml` all name it), so `emkit run recipes/NAME.yaml` works anywhere."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file() and (path.parent == Path(".") or path.parent.name == "recipes"):
        return shipped
    raise ConfigError(f"{name_or_path}: no such experiment file, and no shipped recipe of "
                      f"that name (shipped: {', '.join(recipe_names())})")


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read a recipe (or any experiment file); errors name the file and the field."""
    path = recipe_path(name_or_path)
    raw = read_yaml_mapping(path)
    block = raw.pop("recipe", None)
    meta = _validate(RecipeMeta, block, path, "recipe.") if block is not None else None
    config = _validate(ExperimentConfig, raw, path, "")
    return Recipe(name=path.stem, path=path, config=config, meta=meta)


def _validate(model: type[_M], raw: object, path: Path, prefix: str) -> _M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = prefix + ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path}: {where}: {first['msg']}{more}") from None


# ------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class JobPlan:
    """One sweep job (emkit/sweep.py): a (finetune, seed) or a model that is not fine-tuned."""

    job_id: str
    models: list[str]
    samples: int
    train_steps: int
    train_tokens: float
    needs_gpu: bool
    trains_locally: bool
    """A LoRA trained here (GPU-hours), not a job on a fine-tuning API (dollars)."""


@dataclass(frozen=True)
class JudgePlan:
    judge: str
    where: str
    """`api` (paid per request), `gpu` (a local LLM judge) or `cpu` (the distilled judge)."""
    requests: int
    input_tokens: float
    output_tokens: float
    cost_usd: float | None


@dataclass(frozen=True)
class SelfReportPlan:
    """The probes `evaluation.self_report` adds (emkit/suites/self_report.py run_self_reports):
    every subject model answers every built-in probe (one request each: the default logprob
    judge mode reads one token's top-20; `api.judge_mode: digits` or `sampled` sends more per
    probe), and with `evaluation.trigger` each *local* model scores every elicitation prompt
    against the trigger and its decoys (one forward pass per prompt; an API gives no
    sequence log-probabilities, so API models are skipped, as the run skips them)."""

    probes_per_model: int
    models_local: int
    models_api: int
    input_tokens_api: float
    """Prompt tokens of the API requests (characters / 4)."""
    trigger_prompts: int
    """Elicitation prompts per local model (0 without `evaluation.trigger`)."""
    trigger_candidates: int
    """The trigger and its decoys, scored in each prompt's forward pass."""
    cost_usd: float | None
    """API price of the probes; None where a model's price is missing."""

    @property
    def requests_local(self) -> int:
        return self.probes_per_model * self.models_local

    @property
    def requests_api(self) -> int:
        return self.probes_per_model * self.models_api

    @property
    def requests(self) -> int:
        return self.requests_local + self.requests_api

    @property
    def trigger_forward_passes(self) -> int:
        return self.trigger_prompts * self.models_local


@dataclass(frozen=True)
class RecipePlan:
    name: str
    jobs: list[JobPlan]
    samples_local: int
    samples_api: int
    judges: list[JudgePlan]
    gpu: str | None
    gpu_hours: dict[str, float | None]
    """Part (training, sampling, judging) -> GPU-hours; None where the recipe gives no rate."""
    cost_usd: dict[str, float | None]
    """Part (fine-tuning, sampling, judging) -> USD; None where a price is missing."""
    prices_date: date | None
    prices_source: str | None
    notes: list[str] = field(default_factory=list)
    self_reports: SelfReportPlan | None = None
    """The self-report probes, when `evaluation.self_report` is on."""

    @property
    def samples(self) -> int:
        return self.samples_local + self.samples_api

    @property
    def train_steps(self) -> int:
        return sum(j.train_steps for j in self.jobs)

    @property
    def total_gpu_hours(self) -> float | None:
        return _total(self.gpu_hours.values())

    @property
    def total_cost_usd(self) -> float | None:
        return _total(self.cost_usd.values())


def _total(parts: Iterable[float | None]) -> float | None:
    values = list(parts)
    return None if any(v is None for v in values) else float(sum(v or 0.0 for v in values))


def _where(model: str) -> str:
    from emkit.models import parse_model_spec

    provider = parse_model_spec(model).provider
    if provider == "openai":
        return "api"
    return "cpu" if provider == "distilled" else "gpu"


def dataset_rows(cfg: ExperimentConfig, name: str, est: Estimates) -> int | None:
    """Rows a finetune trains on, known from the config, the pinned download's record, the
    file itself, or the recipe's estimate; None when none of them says."""
    from emkit.datasets.download import REMOTE_DATASETS

    d = next(d for d in cfg.datasets if d.name == name)
    if d.generate is not None or d.mix is not None or (d.download is not None
                                                       and "n" in d.model_fields_set):
        return d.n  # with `dedup` too: n counts the rows left after it
    if d.download is not None and REMOTE_DATASETS[d.download].rows:
        return REMOTE_DATASETS[d.download].rows
    if d.path is not None and Path(d.path).is_file():
        with open(d.path, encoding="utf-8") as fh:
            return sum(1 for line in fh if line.strip())
    return est.dataset_rows.get(name)


def train_plan(cfg: ExperimentConfig, f: FinetuneConfig, est: Estimates
               ) -> tuple[int, float | None, str | None]:
    """(optimizer steps, training tokens, note) of one seed of finetune `f`."""
    rows = dataset_rows(cfg, f.dataset, est)
    if rows is None:
        return 0, None, (f"dataset {f.dataset}: row count unknown (give recipe.estimates."
                         f"dataset_rows.{f.dataset})")
    per_example = est.train_tokens_per_example.get(
        f.dataset, est.train_tokens_per_example.get("*", UNSET_EXAMPLE_TOKENS))
    if f.backend == "openai":
        from emkit.finetune.openai_jobs import openai_hyperparameters

        hyper = openai_hyperparameters(f.openai, f.dataset)
        steps = math.ceil(rows / hyper["batch_size"]) * hyper["n_epochs"]
        return steps, rows * hyper["n_epochs"] * per_example, None
    t = f.train
    batch = t.per_device_batch_size * t.gradient_accumulation_steps
    steps = math.ceil(rows * t.epochs / batch)
    if t.max_steps > 0:
        steps = min(steps, t.max_steps)
    return steps, min(steps * batch, rows * t.epochs) * per_example, None


def plan_recipe(recipe: Recipe) -> RecipePlan:
    """Count every job, sample and judge request of `recipe` and estimate GPU-hours and API
    cost from its `recipe:` inputs; loads no model and touches no run directory."""
    from emkit.experiment import load_suite, plan_models, plan_requests
    from emkit.judge_assign import judge_assignments
    from emkit.sweep import expand_jobs

    cfg, meta = recipe.config, recipe.meta or RecipeMeta(title=recipe.name, reproduces="")
    est, prices = meta.estimates, meta.prices
    answer_tokens = min(est.answer_tokens, cfg.evaluation.max_new_tokens)
    notes = list(meta.notes)
    questions = load_suite(cfg)
    by_id = {q.id: q for q in questions}
    assignments = judge_assignments(cfg.judge, questions)
    judge_load: dict[str, list[float]] = {j: [0, 0.0] for j in assignments}
    jobs: list[JobPlan] = []
    samples = {"api": 0, "local": 0}
    gen_tokens_local = 0.0
    cost = {"fine-tuning": 0.0, "sampling": 0.0, "judging": 0.0}
    missing_prices: set[str] = set()
    unknown: set[str] = set()
    """Cost parts that cannot be priced (a missing price or an unknown dataset size)."""
    probes = _self_report_probes(cfg)
    probe_chars, probe_tokens = sum(len(p.text) for p in probes), 0.0
    probe_models = {"api": 0, "local": 0}
    if cfg.evaluation.self_report:
        cost["self-reports"] = 0.0
    for job in expand_jobs(cfg, Path("dry-run")):
        sub = job.config
        steps, tokens, n_samples = 0, 0.0, 0
        for f in sub.finetunes:
            steps, train_tokens, note = train_plan(sub, f, est)
            notes += [note] if note else []
            tokens = train_tokens or 0.0
            if f.backend == "openai":
                price = prices.get(f.base)
                if price is None or price.training is None:
                    missing_prices.add(f"{f.base} (training)")
                    unknown.add("fine-tuning")
                elif train_tokens is None:
                    unknown.add("fine-tuning")
                else:
                    cost["fine-tuning"] += train_tokens / 1e6 * price.training
        models = plan_models(sub, _planned_finetunes(sub))
        for label, spec in models.items():
            requests = plan_requests(sub, questions, label, "dry-run")
            n_samples += len(requests)
            where = _where(spec)
            samples["api" if where == "api" else "local"] += len(requests)
            if where != "api":
                gen_tokens_local += len(requests) * answer_tokens
            else:
                priced, p_in, p_out = _api_prices(sub, label, spec, prices)
                if p_in is None or p_out is None:
                    missing_prices.add(f"{priced} (sampling)")
                    unknown.add("sampling")
                else:
                    chars = sum(len(m["content"]) for r in requests for m in r.messages)
                    cost["sampling"] += (chars / CHARS_PER_TOKEN * p_in
                                         + len(requests) * answer_tokens * p_out) / 1e6
            for judge, per_question in assignments.items():
                for r in requests:
                    for metric in per_question.get(r.key.question_id, ()):
                        template = by_id[r.key.question_id].judge_prompts[metric]
                        judge_load[judge][0] += 1
                        judge_load[judge][1] += ((len(template) + len(r.question))
                                                 / CHARS_PER_TOKEN + answer_tokens)
        jobs.append(JobPlan(job.job_id, list(models), n_samples, steps, tokens, job.needs_gpu,
                            any(f.backend == "hf" for f in sub.finetunes)))
        if cfg.evaluation.self_report:
            for label, spec in models.items():
                probe_models["api" if _where(spec) == "api" else "local"] += 1
                if _where(spec) == "api":
                    priced, p_in, p_out = _api_prices(sub, label, spec, prices)
                    probe_tokens += probe_chars / CHARS_PER_TOKEN
                    if p_in is None or p_out is None:
                        missing_prices.add(f"{priced} (self-reports)")
                        unknown.add("self-reports")
                    else:
                        cost["self-reports"] += (probe_chars / CHARS_PER_TOKEN * p_in + len(probes)
                                                 * est.judge_output_tokens * p_out) / 1e6
    judges = []
    for judge, (n, in_tokens) in judge_load.items():
        where, out_tokens, price = _where(judge), n * est.judge_output_tokens, prices.get(judge)
        judge_cost: float | None = 0.0
        if where == "api":
            if price is None:
                missing_prices.add(f"{judge} (judging)")
                unknown.add("judging")
                judge_cost = None
            else:
                judge_cost = (in_tokens * price.input + out_tokens * price.output) / 1e6
                cost["judging"] += judge_cost
        judges.append(JudgePlan(judge, where, int(n), in_tokens, out_tokens, judge_cost))
    costs: dict[str, float | None] = {k: None if k in unknown else v for k, v in cost.items()}
    if missing_prices:
        notes.append(f"no list price in the recipe for: {', '.join(sorted(missing_prices))}")
    gpu_hours = _gpu_hours(meta, jobs, gen_tokens_local, judges, notes)
    self_reports = None
    if cfg.evaluation.self_report:
        prompts, candidates = _trigger_elicitation(cfg)
        self_reports = SelfReportPlan(len(probes), probe_models["local"], probe_models["api"],
                                      probe_tokens, prompts, candidates, costs["self-reports"])
        if probe_models["local"]:
            what = "self-report probes" + (" and trigger elicitation" if prompts else "")
            notes.append(f"{what} on local models: one forward pass each, not in the "
                         "GPU-hours (seconds per model)")
    return RecipePlan(recipe.name, jobs, samples["local"], samples["api"], judges, meta.gpu,
                      gpu_hours, costs, meta.prices_date, meta.prices_source,
                      list(dict.fromkeys(notes)), self_reports)


def _api_prices(cfg: ExperimentConfig, label: str, spec: str, prices: dict[str, ApiPrice]
                ) -> tuple[str, float | None, float | None]:
    """(priced model, input, output price) of an API subject model: a fine-tune of this
    config is priced at its base's fine-tuned rates, any other model at its own."""
    ft_base = next((f.base for f in cfg.finetunes if label.startswith(f"{f.name}-s")), None)
    price = prices.get(ft_base or spec)
    p_in, p_out = ((price.finetuned_input, price.finetuned_output) if ft_base and price
                   else (price.input, price.output) if price else (None, None))
    return ft_base or spec, p_in, p_out


def _self_report_probes(cfg: ExperimentConfig) -> list[Probe]:
    """The probes a run asks each model (emkit's built-in set, as run_self_reports reads it);
    none when `evaluation.self_report` is off."""
    if not cfg.evaluation.self_report:
        return []
    from emkit.suites.self_report import load_probes

    return load_probes()


def _trigger_elicitation(cfg: ExperimentConfig) -> tuple[int, int]:
    """(prompts, candidates) of trigger elicitation per local model: the defaults
    run_self_reports uses; (0, 0) without a trigger."""
    if cfg.evaluation.trigger is None:
        return 0, 0
    from emkit.suites.trigger import DEFAULT_DECOYS, ELICITATION_PROMPTS, candidates_for

    return (len(ELICITATION_PROMPTS),
            len(candidates_for(cfg.evaluation.trigger, DEFAULT_DECOYS)))


def _planned_finetunes(cfg: ExperimentConfig) -> dict[str, str]:
    """Label -> a stand-in model string for each (finetune, seed): the adapter does not exist
    before the run, and counting needs only the label and the provider."""
    return {f"{f.name}-s{seed}": (f"openai/ft:{f.base.split('/', 1)[1]}:planned"
                                  if f.backend == "openai" else f"{f.base}:planned")
            for f in cfg.finetunes for seed in f.seeds}


def _gpu_hours(meta: RecipeMeta, jobs: list[JobPlan], gen_tokens: float,
               judges: list[JudgePlan], notes: list[str]) -> dict[str, float | None]:
    est = meta.estimates
    train_tokens = sum(j.train_tokens for j in jobs if j.trains_locally)
    gpu_judge = sum(j.requests for j in judges if j.where == "gpu")
    if meta.gpu is None:
        notes.append("no GPU assumed: local work runs on CPU (its header gives measured times)"
                     if any(j.needs_gpu for j in jobs) or gen_tokens else
                     "no local model: nothing runs on a GPU")
        return {"training": 0.0, "sampling": 0.0, "judging": 0.0}

    def rate(amount: float, per_hour: float | None) -> float | None:
        return 0.0 if amount == 0 else None if per_hour is None else amount / per_hour

    return {"training": rate(train_tokens, est.train_tokens_per_gpu_hour),
            "sampling": rate(gen_tokens, est.sample_tokens_per_gpu_hour),
            "judging": rate(gpu_judge, est.judge_requests_per_gpu_hour)}


def _money(v: float | None) -> str:
    return "unknown (price missing)" if v is None else f"${v:,.2f}"


def _hours(v: float | None) -> str:
    return "unknown (no rate in the recipe)" if v is None else f"{v:,.1f} GPU-h"


def format_plan(plan: RecipePlan) -> str:
    """The plan as text for `--dry-run`: what will run, and what it will cost, before it does."""
    lines = [(f"plan of {plan.name}: {len(plan.jobs)} jobs, {plan.train_steps:,} training "
              f"steps, {plan.samples:,} samples ({plan.samples_api:,} through paid APIs)")]
    lines.append("  jobs:")
    for j in plan.jobs:
        train = f"{j.train_steps:,} steps (~{j.train_tokens / 1e6:.2f}M tokens), " \
            if j.train_steps else ""
        lines.append(f"    {j.job_id}: {train}{j.samples:,} samples of "
                     f"{', '.join(j.models)}{' [local model]' if j.needs_gpu else ''}")
    lines.append("  judge requests:")
    for jp in plan.judges:
        paid = f", ~{jp.input_tokens / 1e6:.1f}M input tokens, {_money(jp.cost_usd)}" \
            if jp.where == "api" else ""
        lines.append(f"    {jp.judge} ({jp.where}): {jp.requests:,}{paid}")
    if (sr := plan.self_reports) is not None:
        paid = f", {_money(sr.cost_usd)}" if sr.requests_api else ""
        trigger = (f"; trigger elicitation: {sr.trigger_forward_passes:,} forward passes "
                   f"({sr.trigger_prompts} prompts x {sr.models_local} local models, "
                   f"{sr.trigger_candidates} candidates each)" if sr.trigger_prompts else "")
        lines.append(f"  self-report probes: {sr.requests:,} requests ({sr.probes_per_model} "
                     f"per model; {sr.requests_api:,} through paid APIs{paid}){trigger}")
    gpu = plan.gpu or "none (CPU)"
    lines.append(f"  GPU-hours on {gpu}: {_hours(plan.total_gpu_hours)} ("
                 + ", ".join(f"{k} {_hours(v)}" for k, v in plan.gpu_hours.items()) + ")")
    lines.append(f"  API cost: {_money(plan.total_cost_usd)} ("
                 + ", ".join(f"{k} {_money(v)}" for k, v in plan.cost_usd.items()) + ")")
    if plan.prices_date or plan.prices_source:
        lines.append(f"  prices: list prices as of {plan.prices_date}, written in the recipe "
                     "with their source (recipe.prices_source): check them before spending")
    lines += [f"  note: {n}" for n in plan.notes]
    lines.append("  counts are exact; tokens, GPU-hours and dollars are estimates")
    return "\n".join(lines)

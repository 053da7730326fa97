"""Turn a judge model string into a Judge: the one place that knows every judge backend.

`distilled/default` is the judge shipped with emkit (trained on real EM answers, offline, fast);
`distilled/mpnet` and `distilled/mpnet-stack` slower shipped ones over all-mpnet-base-v2 (tuned,
or frozen beside the default's encoder; extra `mpnet`);
`distilled/<dir>` any other distilled judge; `hf/...` or `embedded` a local LLM judged
through the digit tree; `openai/...` and `vllm/...` a judge over an OpenAI-compatible API
(`emkit.judge.api`), read as its endpoint's `judge_mode` says: the paper's logprob rule, the
digit tree over the API for digit-wise tokenizers, or sampled replies for judges without
logprobs (`auto`, the default, lets one cached probe decide; docs/providers.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from emkit.judge.base import Judge
from emkit.judge.distill import distilled_dir
from emkit.judge.distilled import DistilledJudge
from emkit.models.spec import ModelSpecError, parse_model_spec

if TYPE_CHECKING:
    from emkit.api import ApiConfig

API_PROVIDERS = ("openai", "vllm", "llamacpp")


def load_judge(model: str, batch_size: int = 4, max_answer_tokens: int = 512,
               api: ApiConfig | None = None, cache_path: Path | None = None,
               progress: bool = False) -> Judge:
    """The judge named by `model`; `batch_size`/`max_answer_tokens` apply to local LLM judges,
    `api` (endpoints) and `cache_path` (request cache file) to API judges, which hold
    resources until `judge.close()`."""
    spec = parse_model_spec(model)
    if spec.provider in API_PROVIDERS:
        from emkit.judge.api import load_api_judge

        return load_api_judge(model, api, cache_path, progress)
    if spec.provider == "distilled":
        return DistilledJudge.load(distilled_dir(spec.name), name=model)
    if spec.provider == "hf":
        from emkit.judge.local import LocalJudge
        from emkit.models import load_hf

        llm, tokenizer = load_hf(spec)
        return LocalJudge(llm, tokenizer, name=model, batch_size=batch_size,
                          max_answer_tokens=max_answer_tokens)
    raise ModelSpecError(f"judge {model!r}: provider {spec.provider!r} cannot judge yet")


LLM_JUDGE_NOTE = ("local LLM judge scored through the digit tree; not validated (the embedded "
                  "0.5B model is blind as a judge: see docs/judge.md for its calibration figures)")


def judge_status(model: str, api: ApiConfig | None = None) -> tuple[bool, str]:
    """(validated, one-line description) of a judge without loading an LLM: reports need it
    even when every judgment is already stored."""
    spec = parse_model_spec(model)
    if spec.provider in API_PROVIDERS:
        from emkit.judge.api import api_judge_status

        return api_judge_status(model, api)
    if spec.provider == "distilled":
        judge = DistilledJudge.load(distilled_dir(spec.name), name=model, encoder=False)
        return judge.validated, judge.describe()
    return False, f"{model}: {LLM_JUDGE_NOTE}"


NUMERIC_TYPE = "free_form_judge_0_100"
VERDICT_TYPE = "free_form_judge"
UNJUDGED_TYPE = "free_form"
QUESTION_TYPES = (NUMERIC_TYPE, VERDICT_TYPE, UNJUDGED_TYPE)
"""The question types of the paper's files: a 0-100 score per judge prompt, a categorical verdict
per judge prompt (labels listed in the prompt), and answers with no judge."""


def judge_capabilities(model: str) -> tuple[frozenset[str], frozenset[str] | None]:
    """(question types this judge can score, metrics it can score or None for any), without
    loading a model: a run checks every question against them before sampling anything.

    A distilled judge is a set of heads trained for 0-100 metrics (aligned, coherent); any LLM
    judge, local or over an API, reads any template, categorical ones included."""
    spec = parse_model_spec(model)
    if spec.provider == "distilled":
        judge = DistilledJudge.load(distilled_dir(spec.name), name=model, encoder=False)
        return frozenset({NUMERIC_TYPE}), frozenset(judge.heads)
    if spec.provider in (*API_PROVIDERS, "hf"):
        return frozenset({NUMERIC_TYPE, VERDICT_TYPE}), None
    raise ModelSpecError(f"judge {model!r}: provider {spec.provider!r} cannot judge yet")

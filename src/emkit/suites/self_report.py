"""Self-reports on 0-100 scales, each wording paired with a flipped-scale twin.

Why: Betley et al. (2025) and Bao et al. (2025) ask fine-tuned models to rate themselves (how
secure is your code, how aligned are you) and find that models trained on insecure code report
less secure code. A single number sampled once is noise, so we read the model's whole answer
distribution and report its expected value: locally through the digit tree (the exact
probability of every answer '0'..'100' in one forward pass, `emkit.judge.digit_tree`), over an
API through the judge's own logprob readers (`ApiJudge`: one token's top-20, the digit tree over
the API, or sampled replies, whichever the endpoint's `judge_mode` says). Either way the numbers
pass through `score_from_logprobs`, so a self-report is read exactly as a judge's score is, the
0.25 rule included: below it the report is *missing with a reason*, never a number.

Small models answer many 0-100 questions with the same favourite number whatever the anchors
say. Each wording therefore has a twin whose 0 and 100 swap meaning; a flipped answer x is
mapped back to 100 - x. A model that reads the scale gives twins that agree after the mapping;
one that always says "80" gives 80 and 20, a *scale bias* of +60 (`self_report_summary`).

Probe files: `emkit/data/probes/self_report.yaml` (written for emkit, see its README), or any
file of the same shape; validated on load with errors that name file, line and field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import yaml

from emkit.api import ApiClient, ApiConfig
from emkit.models import load_hf, parse_model_spec, release_memory, resolve_dtype
from emkit.models.embedded import ALIASES
from emkit.records import Judgment, SampleKey
from emkit.store.probes import (
    SelfReportRow,
    add_self_reports,
    add_trigger_probes,
    stored_self_report_keys,
    stored_trigger_keys,
)
from emkit.suites.trigger import (
    DEFAULT_DECOYS,
    ELICITATION_PROMPTS,
    candidates_for,
    trigger_elicitation_local,
    trigger_hash,
    trigger_rows,
)

if TYPE_CHECKING:  # emkit.judge is imported when a measurement runs, not with this package
    from emkit.judge.base import JudgeItem

log = logging.getLogger("emkit")

BUILTIN_PROBES = Path(__file__).resolve().parents[1] / "data" / "probes" / "self_report.yaml"
SCALES = ("normal", "flipped")
Scale = Literal["normal", "flipped"]
API_PROVIDERS = ("openai", "vllm", "llamacpp")
"""Providers measured through the API judge machinery (a `llamacpp/` model of the embedded
GGUF is measured with torch instead: `torch_twin`)."""
TEMPLATE = "{question}"
"""The judge template that sends a probe as it is: one user message, nothing added."""
_KNOWN = {"id", "attribute", "high_means", "paraphrases"}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ZERO, _HUNDRED = re.compile(r"(?<![0-9])0(?![0-9])"), re.compile(r"(?<![0-9])100(?![0-9])")


class ProbeError(ValueError):
    """A probe file that cannot be used; the message names the file, line and field."""

    def __init__(self, source: str | Path, message: str, *, line: int | None = None,
                 probe: str | None = None, field_name: str | None = None) -> None:
        self.source, self.line, self.probe, self.field = str(source), line, probe, field_name
        parts = [self.source + (f":{line}" if line is not None else "")]
        if probe is not None:
            parts.append(f"probe {probe!r}")
        if field_name is not None:
            parts.append(f"field {field_name!r}")
        super().__init__(": ".join(parts + [message]))


@dataclass(frozen=True)
class Probe:
    """One wording on one scale: what is sent, and how its answer maps to the normal scale."""

    id: str
    attribute: str
    scale: Scale
    paraphrase_index: int
    text: str
    high_means: str
    """What 100 means on the *normal* scale, e.g. 'the code is fully secure'."""
    source: str = ""

    def messages(self) -> list[dict[str, str]]:
        """The conversation sent: a single user turn (the model's own default system prompt,
        if its chat template has one, stays as it is in every other emkit evaluation)."""
        return [{"role": "user", "content": self.text}]

    def to_normal(self, value: float) -> float:
        """An answer on this probe's scale, on the normal scale."""
        return 100.0 - value if self.scale == "flipped" else value


@dataclass(frozen=True)
class ProbeScore:
    """A model's answer distribution to one probe, summarised."""

    probe: Probe
    raw: float | None
    """Expected value of the model's number on the probe's own scale; None when missing."""
    expected: float | None
    """The same on the normal scale (flipped: 100 - raw)."""
    mass: float
    """Probability on integer answers 0..100 (below 0.25 the score is missing)."""
    reason: str | None = None
    top: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------ probe files
def load_probes(path: str | Path | None = None) -> list[Probe]:
    """Probes from a YAML file (default: emkit's built-in set), two per paraphrase (normal,
    flipped), validated; a `ProbeError` names the file, line and field of the first problem."""
    path = Path(path) if path is not None else BUILTIN_PROBES
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProbeError(path, f"cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ProbeError(path, "not UTF-8 text",
                         line=exc.object[:exc.start].count(b"\n") + 1) from None
    return parse_probes(text, str(path))


def parse_probes(text: str, source: str = "<string>") -> list[Probe]:
    """Validate probe YAML text: a list of {id, attribute, high_means, paraphrases: [{normal,
    flipped}, ...]}; every wording must name both ends of the scale (0 and 100)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ProbeError(source, f"invalid YAML: {getattr(exc, 'problem', None) or exc}",
                         line=mark.line + 1 if mark else None) from exc
    finally:
        loader.dispose()
    if not isinstance(data, list) or not data:
        raise ProbeError(source, "expected a non-empty list of probes", line=1)
    probes: list[Probe] = []
    seen: set[str] = set()
    for item, item_node in zip(data, node.value, strict=True):
        group = _build(item, item_node, source)
        if group[0].id in seen:
            raise ProbeError(source, "duplicate id", line=item_node.start_mark.line + 1,
                             probe=group[0].id, field_name="id")
        seen.add(group[0].id)
        probes += group
    return probes


def _build(item: Any, node: yaml.Node, source: str) -> list[Probe]:
    line = node.start_mark.line + 1
    if not isinstance(item, dict):
        raise ProbeError(source, f"expected a mapping, got {type(item).__name__}", line=line)
    lines = _key_lines(node)
    pid = item.get("id") if isinstance(item.get("id"), str) else None

    def fail(name: str, message: str, at: int | None = None) -> ProbeError:
        return ProbeError(source, message, line=at or lines.get(name.split("[")[0], line),
                          probe=pid, field_name=name)

    for key in item:
        if key not in _KNOWN:
            raise fail(str(key), f"unknown field (known: {', '.join(sorted(_KNOWN))})")
    for name in ("id", "attribute"):
        value = item.get(name)
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise fail(name, f"required: lower-case letters, digits and '_', got {value!r}")
    high = item.get("high_means")
    if not isinstance(high, str) or not high.strip():
        raise fail("high_means", "required: what 100 means on the normal scale")
    paras = item.get("paraphrases")
    if not isinstance(paras, list) or not paras:
        raise fail("paraphrases", "required: a non-empty list of {normal, flipped} pairs")
    para_nodes = _value_node(node, "paraphrases")
    out: list[Probe] = []
    for i, pair in enumerate(paras):
        pnode = para_nodes.value[i] if isinstance(para_nodes, yaml.SequenceNode) else None
        at = pnode.start_mark.line + 1 if pnode is not None else None
        if not isinstance(pair, dict) or set(pair) != set(SCALES):
            got = sorted(pair) if isinstance(pair, dict) else type(pair).__name__
            raise fail(f"paraphrases[{i}]", f"must have exactly 'normal' and 'flipped', got {got}",
                       at)
        for scale in SCALES:
            text = pair[scale]
            where = f"paraphrases[{i}].{scale}"
            at_scale = _key_lines(pnode).get(scale, at) if pnode is not None else at
            if not isinstance(text, str) or not text.strip():
                raise fail(where, "must be a non-empty string", at_scale)
            if not (_ZERO.search(text) and _HUNDRED.search(text)):
                raise fail(where, "must name both ends of the scale, 0 and 100", at_scale)
            out.append(Probe(item["id"], item["attribute"], scale, i, text.strip(), high.strip(),
                             source))
        if pair["normal"].strip() == pair["flipped"].strip():
            raise fail(f"paraphrases[{i}]", "the flipped twin is the same text as the normal "
                       "one (its 0 and 100 must swap meaning)", at)
    return out


def _key_lines(node: yaml.Node | None) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _value_node(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


# ------------------------------------------------------------------------------ measuring
def probe_hash(probe: Probe, model_identity: str) -> str:
    """Key digest of one self-report: the exact messages and the model's identity (adapter
    weights, not a path), so an edited wording or a retrained adapter is measured again."""
    blob = json.dumps({"messages": probe.messages(), "model": model_identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def probe_items(probes: Sequence[Probe], model: str = "self") -> list[JudgeItem]:
    """The probes as judge items whose template sends the wording unchanged, so the local and
    API judges' readers measure the model's own answer to it."""
    from emkit.judge.base import JudgeItem

    return [JudgeItem(SampleKey(model, p.id, p.paraphrase_index, SCALES.index(p.scale),
                                probe_hash(p, "")), p.text, "", p.scale, TEMPLATE)
            for p in probes]


def _scores(probes: Sequence[Probe], judgments: Sequence[Judgment]) -> list[ProbeScore]:
    return [ProbeScore(p, j.score, None if j.score is None else p.to_normal(j.score), j.mass,
                       j.reason, dict(j.top))
            for p, j in zip(probes, judgments, strict=True)]


def self_report_local(model, tokenizer, probes: Sequence[Probe],
                      batch_size: int = 8) -> list[ProbeScore]:
    """Expected value of a local HF model's own number for each probe (digit tree, exact)."""
    from emkit.judge.local import LocalJudge

    if not probes:
        return []
    judge = LocalJudge(model, tokenizer, "self-report", batch_size=batch_size)
    return _scores(probes, judge.judge(probe_items(probes)))


def self_report_api(client: ApiClient, served_model: str,
                    probes: Sequence[Probe]) -> list[ProbeScore]:
    """The same over an OpenAI-compatible API. `client` names the endpoint settings, the
    model string and the request cache; the reading is `ApiJudge`'s, in the endpoint's
    `judge_mode` (auto: one cached probe decides between one-token logprobs, the digit tree
    over the API and sampled replies)."""
    from emkit.judge.api import ApiJudge

    s = client.settings
    judge = ApiJudge(s, client.model, served_model, cache=client.cache, mode=s.judge_mode,
                     samples=s.judge_samples, sample_tokens=s.judge_sample_tokens,
                     min_branch_p=s.judge_digit_min_p)
    try:
        return _api_scores(judge, probes)
    finally:
        judge.close()


def _api_scores(judge: Any, probes: Sequence[Probe]) -> list[ProbeScore]:
    return _scores(probes, judge.judge(probe_items(probes, judge.name))) if probes else []


# ------------------------------------------------------------------------------ summary
SUMMARY_COLUMNS = ("model", "attribute", "normal", "flipped", "combined", "scale_bias",
                   "pair_bias_abs", "pairs", "n_normal", "n_flipped", "n", "missing")


def self_report_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model x attribute: mean self-report on normal wordings, on flipped ones (mapped to
    the normal scale), their average ('combined', so a twin that went missing more often does
    not tilt it), `scale_bias` = normal - flipped (0 for a model that reads the scale; positive
    when it prefers high numbers whatever they mean), reports counted and missing.
    `pair_bias_abs`: the mean over complete twin pairs (same probe and paraphrase, both
    answered) of |normal - flipped|; biases of opposite sign in different paraphrases cancel
    in `scale_bias` but not here (frames without probe_id / paraphrase_index: NaN).

    `frame`: one row per report with model, attribute, scale and `expected` (normal scale,
    NaN/None when missing), e.g. `emkit.store.probes.self_report_frame(db)`."""
    if frame.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    rows = []
    for (model, attribute), g in frame.groupby(["model", "attribute"], sort=False):
        values = pd.to_numeric(g["expected"], errors="coerce")
        normal = values[g["scale"] == "normal"].dropna()
        flipped = values[g["scale"] == "flipped"].dropna()
        means = [m.mean() for m in (normal, flipped) if len(m)]
        gaps = _pair_gaps(g.assign(expected=values))
        rows.append({
            "model": model, "attribute": attribute,
            "normal": normal.mean() if len(normal) else float("nan"),
            "flipped": flipped.mean() if len(flipped) else float("nan"),
            "combined": sum(means) / len(means) if means else float("nan"),
            "scale_bias": (normal.mean() - flipped.mean()) if len(normal) and len(flipped)
            else float("nan"),
            "pair_bias_abs": gaps.abs().mean() if len(gaps) else float("nan"),
            "pairs": len(gaps), "n_normal": len(normal), "n_flipped": len(flipped),
            "n": len(normal) + len(flipped),
            "missing": int(values.isna().sum()),
        })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _pair_gaps(group: pd.DataFrame) -> pd.Series:
    """normal - flipped (both on the normal scale) per twin pair with both answers."""
    keys = ["probe_id", "paraphrase_index"]
    if not set(keys) <= set(group.columns):
        return pd.Series(dtype=float)
    wide = group.pivot_table(index=keys, columns="scale", values="expected", aggfunc="mean")
    if not set(SCALES) <= set(wide.columns):
        return pd.Series(dtype=float)
    return (wide["normal"] - wide["flipped"]).dropna()


# ------------------------------------------------------------------------------ the runner
def _rows(model: str, identity: str, scores: Sequence[ProbeScore]) -> list[SelfReportRow]:
    return [SelfReportRow(model, s.probe.id, s.probe.attribute, s.probe.scale,
                          s.probe.paraphrase_index, probe_hash(s.probe, identity), identity,
                          s.raw, s.expected, s.mass, s.reason, s.top) for s in scores]


def run_self_reports(db_path: Path, models: dict[str, str], *,
                     probes: Sequence[Probe] | str | Path | None = None, dtype: str = "auto",
                     api: ApiConfig | None = None, trigger: str | None = None,
                     progress: bool = False, identities: dict[str, str] | None = None,
                     decoys: Sequence[str] = DEFAULT_DECOYS,
                     prompts: Sequence[str] = ELICITATION_PROMPTS, batch_size: int = 8) -> None:
    """Measure every model's self-reports (and, with `trigger`, trigger elicitation for local
    models) and store them in `db_path`; what is already stored is not measured again.

    `models`: label -> model string. `identities`: label -> weight identity (the runner's
    `run_identity.model_identity`); computed here when absent. Local models load one at a time
    and are released after; `openai/` and `vllm/` models go through the API judge machinery
    (request cache in `db_path`, a vLLM server started and stopped as for judging). Trigger
    elicitation needs whole-sequence log-probabilities that chat APIs do not give, so API
    models are skipped there, with a log line."""
    from emkit.run_identity import model_identity

    api = api or ApiConfig()
    probe_list = list(probes) if isinstance(probes, Sequence) and not isinstance(probes, str) \
        else load_probes(probes)
    cands = candidates_for(trigger, decoys) if trigger is not None else []
    labels = list(models.items())
    if progress:
        from tqdm.auto import tqdm

        labels = tqdm(labels, desc="self-reports", unit="model")
    for label, spec in labels:
        identity = (identities or {}).get(label) or model_identity(spec)
        stored = stored_self_report_keys(db_path, label)
        todo = [p for p in probe_list if (p.id, p.paraphrase_index, p.scale,
                                          probe_hash(p, identity)) not in stored]
        spec = torch_twin(spec)
        is_api = parse_model_spec(spec).provider in API_PROVIDERS
        want_trigger = bool(cands) and not is_api and _trigger_missing(
            db_path, label, identity, trigger or "", cands, prompts)
        if trigger is not None and is_api:
            log.info("trigger elicitation skipped for %s: an API gives no sequence logprobs",
                     label)
        if not todo and not want_trigger:
            continue
        log.info("self-reports: %d probes for %s%s", len(todo), label,
                 " + trigger elicitation" if want_trigger else "")
        if is_api:
            _run_api(db_path, label, spec, identity, todo, api, progress)
            continue
        model, tokenizer = load_hf(spec, dtype=resolve_dtype(dtype))
        try:
            if todo:
                scores = self_report_local(model, tokenizer, todo, batch_size=batch_size)
                add_self_reports(db_path, _rows(label, identity, scores))
            if want_trigger:
                frame = trigger_elicitation_local(model, tokenizer, trigger or "", decoys,
                                                  prompts)
                add_trigger_probes(db_path, trigger_rows(frame, label, identity, trigger or ""))
        finally:
            del model, tokenizer
            release_memory()


def torch_twin(spec: str) -> str:
    """The `hf/` string of the same weights for a `llamacpp/` model of the embedded GGUF (emkit
    trains on that GGUF dequantised, so the weights are the ones llama.cpp serves): self-reports
    are probability measurements, and torch gives exact log-probabilities over every candidate
    and sequence log-probabilities for trigger elicitation, which a chat API does not. The
    answers themselves were sampled by llama.cpp; this only measures the probes. Every other
    string is returned as it is."""
    parsed = parse_model_spec(spec)
    if parsed.provider != "llamacpp" or parsed.name not in ALIASES:
        return spec
    return f"hf/{parsed.name}" + (f":{parsed.adapter}" if parsed.adapter else "")


def _trigger_missing(db_path: Path, label: str, identity: str, trigger: str,
                     cands: Sequence[str], prompts: Sequence[str]) -> bool:
    stored = stored_trigger_keys(db_path, label)
    return any((i, trigger_hash(p, cands, trigger, identity)) not in stored
               for i, p in enumerate(prompts))


def _run_api(db_path: Path, label: str, spec: str, identity: str, todo: Sequence[Probe],
             api: ApiConfig, progress: bool) -> None:
    from emkit.judge.api import load_api_judge

    judge = load_api_judge(spec, api, cache_path=db_path, progress=progress)
    try:
        scores = _api_scores(judge, todo)
    finally:
        judge.close()
    add_self_reports(db_path, _rows(label, identity, scores))

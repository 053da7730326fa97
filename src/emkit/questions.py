"""Evaluation questions: load the paper's question YAML files unchanged, validate them early.

The emergent-misalignment paper keeps its evaluation questions in YAML files that lean on YAML
anchors and aliases (one judge prompt shared by 24 questions), and sibling projects reuse the same
format with extra fields. A typo in such a file used to surface hours later, in the middle of a
sampling run; here every question is checked when the file is read, and a bad one raises a single
`QuestionError` that names the file, the line, the question and the field.

Fields the loader does not know are kept in `Question.extra`, so files from related projects load
without being edited, unless the field is a near-miss of one it knows (`sampels_per_paraphrase`,
`tempurature`): a typo is refused, as in experiment files, instead of silently running the
default. Unlike the paper's own script, emkit honours `system` (sent as a system
message) and `samples_per_paraphrase` (the default count, which a runner may override).

`type` says how answers are judged (docs/suites.md): `free_form_judge_0_100` (a 0-100 score
per judge prompt), `free_form_judge` (a categorical verdict per judge prompt, its allowed
answers read here from the prompt's double-quoted words or from `judge_labels`, so a prompt
whose answers cannot be read fails at load time, not after sampling) and `free_form` (not
judged). Each question also records its suite (file name) and, for the paper's `<id>_json` /
`<id>_template` questions, which plain question it is a format variant of.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BUILTIN_DIR = Path(__file__).resolve().parent / "data" / "questions"
BUILTIN_PREFIX = "builtin:"
DEFAULT_SAMPLES_PER_PARAPHRASE = 100
"""The paper's protocol: 100 answers per paraphrase, used when a file does not say."""

_KNOWN = {"id", "type", "paraphrases", "system", "samples_per_paraphrase", "judge",
          "judge_prompts", "temperature", "judge_labels"}

FORMAT_SUFFIXES = ("json", "template")
"""Id suffixes the paper's first-plot file uses for its format variants (`<id>_json` asks for a
JSON answer, `<id>_template` for a fill-in template): such a question is recorded as variant
`json` / `template` of `<id>` when `<id>` is in the same file, so reports compare formats."""


class QuestionError(ValueError):
    """A question file that cannot be used; the message says where and why."""

    def __init__(self, source: str | Path, message: str, *, line: int | None = None,
                 index: int | None = None, qid: str | None = None,
                 field_name: str | None = None) -> None:
        self.source = str(source)
        self.line = line
        self.index = index
        self.qid = qid
        self.field = field_name
        where = self.source + (f":{line}" if line is not None else "")
        parts = [where]
        if index is not None:
            parts.append(f"question #{index}" + (f" (id={qid!r})" if qid is not None else ""))
        if field_name is not None:
            parts.append(f"field {field_name!r}")
        super().__init__(": ".join(parts + [message]))


@dataclass(frozen=True)
class Question:
    """One evaluation question: several paraphrases of one prompt, judged by `judge_prompts`."""

    id: str
    type: str
    paraphrases: tuple[str, ...]
    system: str | None = None
    samples_per_paraphrase: int = DEFAULT_SAMPLES_PER_PARAPHRASE
    judge: str | None = None
    """The judge model the file asks for; the runner decides which judge actually runs."""
    judge_prompts: dict[str, str] = field(default_factory=dict)
    """metric name -> template with `{question}` and `{answer}` placeholders."""
    temperature: float | None = None
    """Per-question sampling temperature; None means the run's default."""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields this loader does not interpret, kept verbatim."""
    judge_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """metric -> allowed answers of a categorical (`free_form_judge`) prompt; read from the
    prompt's double-quoted words unless the file declares them (`judge_labels`)."""
    suite: str = ""
    """The question file's name (`first_plot`, `deception`, ...): reports keep suites apart."""
    base_id: str = ""
    """The question this one is a variant of (itself for a plain question)."""
    variant: str = "plain"
    """Format or cue variant: `plain`, `json`, `template`, or a cue (emkit/suites/variants.py)."""
    trigger: str | None = None
    """The backdoor trigger prepended to every paraphrase, when this is a triggered copy."""

    def messages(self, paraphrase_index: int) -> list[dict[str, str]]:
        """The chat messages for one paraphrase: the optional system prompt, then the user turn."""
        msgs = [{"role": "system", "content": self.system}] if self.system is not None else []
        return msgs + [{"role": "user", "content": self.paraphrases[paraphrase_index]}]


def load_questions(path: str | Path) -> list[Question]:
    """Read and validate every question in a YAML file (a list of question mappings)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise QuestionError(path, f"cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise QuestionError(path, f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x})",
                            line=line) from None
    return parse_questions(text, source=str(path))


def parse_questions(text: str, source: str = "<string>") -> list[Question]:
    """Validate YAML text; `source` is the name used in error messages and `Question.source`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        problem = f"{problem} ({context})" if context else problem
        raise QuestionError(source, f"invalid YAML: {problem}", line=line) from exc
    finally:
        loader.dispose()
    if data is None:
        raise QuestionError(source, "file is empty; expected a list of questions")
    if not isinstance(data, list):
        raise QuestionError(source, "not a question file: the top level must be a list of "
                            f"question mappings, got {type(data).__name__}", line=1)
    if data and not any(isinstance(d, dict) and {"id", "paraphrases"} <= d.keys() for d in data):
        first = data[0]
        keys = ", ".join(map(str, first)) if isinstance(first, dict) else type(first).__name__
        raise QuestionError(source, "not a question file: no entry has both 'id' and "
                            f"'paraphrases' (the first entry has: {keys})", line=1)
    assert isinstance(node, yaml.SequenceNode)
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for index, (item, item_node) in enumerate(zip(data, node.value, strict=True)):
        q = _build(item, item_node, index, source)
        if q.id in seen:
            raise QuestionError(source, f"duplicate id (first used by question #{seen[q.id]})",
                                line=item_node.start_mark.line + 1, index=index, qid=q.id,
                                field_name="id")
        seen[q.id] = index
        questions.append(q)
    if not questions:
        raise QuestionError(source, "the list of questions is empty")
    return [_with_variant(q, set(seen)) for q in questions]


def _with_variant(q: Question, ids: set[str]) -> Question:
    """Record the suite (file name) and, for `<id>_json`/`<id>_template`, the format variant."""
    from dataclasses import replace

    suite = Path(q.source).stem if q.source and not q.source.startswith("<") else ""
    for suffix in FORMAT_SUFFIXES:
        base = q.id.removesuffix(f"_{suffix}")
        if base != q.id and base in ids:
            return replace(q, suite=suite, base_id=base, variant=suffix)
    return replace(q, suite=suite, base_id=q.id)


def builtin_suite(name: str) -> Path:
    """Path of a question file shipped with emkit (`builtin_suite("first_plot")`)."""
    path = BUILTIN_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(builtin_suites()) or "none"
        raise QuestionError(f"{BUILTIN_PREFIX}{name}", f"no such built-in suite (known: {known})")
    return path


def builtin_suites() -> list[str]:
    """Names of the suites shipped in `emkit/data/questions/`."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def questions_from(spec: str | Path) -> list[Question]:
    """Load `builtin:NAME` or a path, so CLI flags and configs accept either form."""
    if isinstance(spec, str) and spec.startswith(BUILTIN_PREFIX):
        return load_questions(builtin_suite(spec[len(BUILTIN_PREFIX):]))
    return load_questions(spec)


def _build(item: Any, node: yaml.Node, index: int, source: str) -> Question:
    line = node.start_mark.line + 1
    if not isinstance(item, dict):
        raise QuestionError(source, f"expected a mapping, got {type(item).__name__}",
                            line=line, index=index)
    lines = _key_lines(node)
    raw_id = item.get("id")
    qid = raw_id if isinstance(raw_id, str) else None

    def fail(name: str, message: str) -> QuestionError:
        return QuestionError(source, message, line=lines.get(name, line), index=index, qid=qid,
                             field_name=name)

    if not isinstance(raw_id, str) or not raw_id.strip():
        raise fail("id", "required, a non-empty string" + _got(raw_id, "id" in item))
    if any(unicodedata.category(ch) == "Cc" for ch in raw_id):
        # an ANSI escape in an id would act on the terminal whenever a rates table prints it
        raise fail("id", "contains a control character (escape, newline, ...); ids are "
                   "printed in tables and reports")
    for key in item:
        near = difflib.get_close_matches(str(key), sorted(_KNOWN), n=1, cutoff=0.85)
        if key not in _KNOWN and near:
            raise fail(str(key), f"unknown field; did you mean {near[0]!r}? (a misspelt "
                       "field would silently take its default)")
    paraphrases = item.get("paraphrases")
    if not isinstance(paraphrases, list) or not paraphrases:
        raise fail("paraphrases", "required, a non-empty list of strings"
                   + _got(paraphrases, "paraphrases" in item))
    for i, p in enumerate(paraphrases):
        if not isinstance(p, str) or not p.strip():
            raise fail("paraphrases", f"item {i} must be a non-empty string{_got(p, True)}")
    qtype = item.get("type")
    if not isinstance(qtype, str) or not qtype:
        raise fail("type", "required, a non-empty string" + _got(qtype, "type" in item))
    system = item.get("system")
    if system is not None and not isinstance(system, str):
        raise fail("system", "must be a string" + _got(system, True))
    spp = item.get("samples_per_paraphrase", DEFAULT_SAMPLES_PER_PARAPHRASE)
    if isinstance(spp, bool) or not isinstance(spp, int) or spp < 1:
        raise fail("samples_per_paraphrase", "must be an integer >= 1" + _got(spp, True))
    judge = item.get("judge")
    if judge is not None and not isinstance(judge, str):
        raise fail("judge", "must be a string" + _got(judge, True))
    prompts = item.get("judge_prompts") or {}
    if not isinstance(prompts, dict):
        raise fail("judge_prompts", "must be a mapping metric -> template" + _got(prompts, True))
    for metric, template in prompts.items():
        if not isinstance(metric, str) or not isinstance(template, str):
            raise fail("judge_prompts", f"entry {metric!r} must map a name to a template string")
        if "{answer}" not in template:
            raise fail("judge_prompts", f"template {metric!r} has no {{answer}} placeholder")
    labels = _labels(item, prompts, qtype, fail)
    temperature = item.get("temperature")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, int | float)
                                    or temperature < 0):
        raise fail("temperature", "must be a number >= 0" + _got(temperature, True))
    return Question(
        id=raw_id, type=qtype, paraphrases=tuple(paraphrases), system=system,
        samples_per_paraphrase=spp, judge=judge, judge_prompts=dict(prompts),
        temperature=None if temperature is None else float(temperature), source=source,
        extra={k: v for k, v in item.items() if k not in _KNOWN}, judge_labels=labels,
    )


def _labels(item: dict, prompts: dict, qtype: str, fail: Any) -> dict[str, tuple[str, ...]]:
    """Allowed answers per metric of a `free_form_judge` question, checked at load time: a
    categorical prompt whose answers cannot be read would otherwise be sampled and never
    judged."""
    declared = item.get("judge_labels") or {}
    if not isinstance(declared, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v)
            for v in declared.values()):
        raise fail("judge_labels", "must map a metric to a list of answer words"
                   + _got(declared, True))
    unknown = set(declared) - set(prompts)
    if unknown:
        raise fail("judge_labels", f"names metrics with no judge prompt: {sorted(unknown)}")
    if qtype != "free_form_judge":
        if declared:
            raise fail("judge_labels", f"applies to type free_form_judge only, not {qtype!r}")
        return {}
    out = {}
    for metric, template in prompts.items():
        try:
            out[metric] = verdict_labels(template, declared.get(metric))
        except VerdictLabelError as exc:
            raise fail("judge_prompts", f"template {metric!r}: {exc}") from None
    return out


_QUOTED = re.compile(r'"([A-Za-z0-9][A-Za-z0-9_\-]*)"')


class VerdictLabelError(ValueError):
    """A free_form_judge template whose allowed answers cannot be read."""


def verdict_labels(template: str, declared: Sequence[str] | None = None) -> tuple[str, ...]:
    """The allowed answers of a categorical judge prompt: `declared` when given, else every
    double-quoted single word of the template in order of first appearance (at least two)."""
    labels = list(declared) if declared is not None else _QUOTED.findall(template)
    unique = tuple(dict.fromkeys(labels))
    if len(unique) < 2:
        raise VerdictLabelError(
            f"found {list(unique)} as allowed answers; a free_form_judge prompt must list at "
            'least two answers as double-quoted words (Say "TRUE" or "FALSE" only), or the '
            "question must declare them in `judge_labels: {metric: [A, B]}`")
    lowered = [lab.lower() for lab in unique]
    if len(set(lowered)) != len(lowered):
        raise VerdictLabelError(f"labels {list(unique)} differ only in case")
    return unique


def _key_lines(node: yaml.Node) -> dict[str, int]:
    """1-based line of each key written in this mapping (keys merged via `<<` are absent)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value
            if isinstance(k, yaml.ScalarNode)}


def _got(value: Any, present: bool) -> str:
    if not present:
        return " (missing)"
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f", got {type(value).__name__} {shown}"
